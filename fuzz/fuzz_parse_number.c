/*
 * fuzz_parse_number: libFuzzer target comparing parse_number() in
 * server/src/options.c with an obviously correct reference.
 *
 * The input is:
 *   bytes 0-7   min, little-endian
 *   bytes 8-15  max, little-endian
 *   byte 16     if odd, min and max are replaced by one of the ranges the
 *               server really uses (picked by its other bits), so the
 *               interesting boundaries (0, 1, 65535, 65536, 86400, 2^30)
 *               are reached often
 *   bytes 17-   the text (a NUL in it ends the string early, as in argv)
 *
 * The reference accepts exactly: one or more ASCII digits, nothing else,
 * a value that fits in unsigned long, min <= value <= max.
 * Checked (abort() on violation): same verdict, same value on success,
 * *value untouched on failure.
 */
#include "check.h"
#include "options.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned long server_ranges[][2] = {
	{ 1, 65535 },			/* --port */
	{ 1, 65536 },			/* --max-connections */
	{ 1, 1024 },			/* --max-workers */
	{ 1, 1024UL * 1024 * 1024 },	/* --max-packet */
	{ 0, 86400 },			/* --idle-timeout, --send-timeout */
	{ 0, 1024 },			/* LISTEN_FDS */
	{ 1, 0x7fffffffUL },		/* LISTEN_PID */
	{ 0, ULONG_MAX },
	{ 5, 5 },
};

static unsigned long load_le(const uint8_t *p)
{
	unsigned long v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int reference(const char *text, unsigned long min, unsigned long max,
		     unsigned long *value)
{
	unsigned long v = 0;
	const char *p;

	if (*text == '\0')
		return -1;
	for (p = text; *p; p++) {
		unsigned digit;

		if (*p < '0' || *p > '9')
			return -1;
		digit = (unsigned)(*p - '0');
		if (v > (ULONG_MAX - digit) / 10)
			return -1;	/* overflow */
		v = v * 10 + digit;
	}
	if (v < min || v > max)
		return -1;
	*value = v;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned long untouched = 0x5a5a5a5aUL;
	unsigned long min, max, got = untouched, want = untouched;
	char *text;
	int rc, ref;

	if (size < 17)
		return 0;
	min = load_le(data);
	max = load_le(data + 8);
	if (data[16] & 1) {
		const unsigned long *r = server_ranges[(data[16] >> 1) % 8];

		min = r[0];
		max = r[1];
	}
	/* exactly sized, so ASan sees any read past the terminator */
	text = malloc(size - 17 + 1);
	CHECK(text != NULL);
	memcpy(text, data + 17, size - 17);
	text[size - 17] = '\0';

	rc = parse_number(text, min, max, &got);
	ref = reference(text, min, max, &want);
	if (rc != ref || got != want) {
		fprintf(stderr,
			"text '%s' min %lu max %lu: parse_number %d (%lu), reference %d (%lu)\n",
			text, min, max, rc, got, ref, want);
		abort();
	}
	free(text);
	return 0;
}
