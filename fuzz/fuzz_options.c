/*
 * fuzz_options: libFuzzer target for options_parse() in
 * server/src/options.c.
 *
 * The input, split on NUL bytes, is the argument vector after argv[0]
 * (at most MAX_ARGS arguments, each in a buffer of exactly its size so
 * ASan sees any read past it).  Help, version and errors go to memory
 * streams (open_memstream), which are checked and freed.
 *
 * Invariants checked (abort() on violation):
 *  - the result is one of the three documented values;
 *  - OPTIONS_RUN: nothing was printed, every number is in its documented
 *    range, every string option is non-empty and is one of the argument
 *    strings (or the default data file), nothing else was allocated;
 *  - OPTIONS_EXIT_OK: something was printed on out, nothing on err, and
 *    it is the help text or the version line;
 *  - OPTIONS_USAGE_ERROR: nothing on out, a message on err that starts
 *    with "aesdsocket: " and ends with the "Try ... --help" hint;
 *  - parsing the same vector a second time (getopt's state is reset)
 *    gives the same result, the same options and the same messages.
 */
#include "check.h"
#include "options.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char hint[] = "Try 'aesdsocket --help' for more information.\n";

struct outcome {
	enum options_result result;
	struct options opts;
	char *out, *err;
	size_t out_len, err_len;
};

static void parse(int argc, char **original, struct outcome *o)
{
	/* getopt_long permutes its vector: give it a copy every time */
	char *argv[MAX_ARGS + 2];
	FILE *out, *err;

	memcpy(argv, original, sizeof(char *) * (size_t)(argc + 1));
	o->out = o->err = NULL;
	o->out_len = o->err_len = 0;
	out = open_memstream(&o->out, &o->out_len);
	err = open_memstream(&o->err, &o->err_len);
	CHECK(out != NULL && err != NULL);
	o->result = options_parse(&o->opts, argc, argv, out, err);
	CHECK(fclose(out) == 0 && fclose(err) == 0);
}

static int is_argument(const char *s, int argc, char **argv)
{
	int i;

	/* an option value is an argument itself, or the rest of one
	 * ("-p9000", "--port=9000") */
	for (i = 1; i < argc; i++)
		if (s >= argv[i] && s <= argv[i] + strlen(argv[i]))
			return 1;
	return 0;
}

static void check_string(const char *s, int argc, char **argv)
{
	if (!s)
		return;
	CHECK(s[0] != '\0');
	CHECK(is_argument(s, argc, argv));
}

static void check_run(const struct outcome *o, int argc, char **argv)
{
	const struct options *p = &o->opts;

	CHECK(o->out_len == 0 && o->err_len == 0);
	CHECK(p->port >= 1 && p->port <= 65535);
	CHECK(p->max_connections >= 1 && p->max_connections <= 65536);
	CHECK(p->max_packet >= 1 && p->max_packet <= 1024UL * 1024 * 1024);
	CHECK(p->idle_timeout_s <= 86400);
	CHECK(p->send_timeout_s <= 86400);
	CHECK(p->data_file != NULL && p->data_file[0] != '\0');
	CHECK(is_argument(p->data_file, argc, argv) ||
	      strcmp(p->data_file, "/var/tmp/aesdsocketdata") == 0);
	check_string(p->bind_address, argc, argv);
	check_string(p->pidfile, argc, argv);
	check_string(p->user, argc, argv);
}

static void check_outcome(const struct outcome *o, int argc, char **argv)
{
	switch (o->result) {
	case OPTIONS_RUN:
		check_run(o, argc, argv);
		break;
	case OPTIONS_EXIT_OK:
		CHECK(o->err_len == 0 && o->out_len > 0);
		CHECK(strncmp(o->out, "Usage: aesdsocket", 17) == 0 ||
		      strcmp(o->out, "aesdsocket " AESD_VERSION "\n") == 0);
		break;
	case OPTIONS_USAGE_ERROR:
		CHECK(o->out_len == 0);
		CHECK(o->err_len > sizeof(hint));
		CHECK(strncmp(o->err, "aesdsocket: ", 12) == 0);
		CHECK(strcmp(o->err + o->err_len - (sizeof(hint) - 1), hint) ==
		      0);
		break;
	default:
		CHECK(!"unknown options_result");
	}
}

static void check_same(const struct outcome *a, const struct outcome *b)
{
	CHECK(a->result == b->result);
	CHECK(a->out_len == b->out_len && a->err_len == b->err_len);
	CHECK(memcmp(a->out, b->out, a->out_len) == 0);
	CHECK(memcmp(a->err, b->err, a->err_len) == 0);
	if (a->result == OPTIONS_RUN)
		CHECK(memcmp(&a->opts, &b->opts, sizeof(a->opts)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[MAX_ARGS + 2];
	struct outcome first, second;
	int argc = 1, i;
	size_t start = 0, end;

	argv[0] = strdup("aesdsocket");
	CHECK(argv[0] != NULL);
	while (start < size && argc <= MAX_ARGS) {
		const uint8_t *nul = memchr(data + start, 0, size - start);

		end = nul ? (size_t)(nul - data) : size;
		argv[argc] = malloc(end - start + 1);
		CHECK(argv[argc] != NULL);
		memcpy(argv[argc], data + start, end - start);
		argv[argc][end - start] = '\0';
		argc++;
		start = end + 1;
	}
	argv[argc] = NULL;

	/* options_parse() starts from options_defaults(), which zeroes the
	 * whole struct, padding included: memcmp compares it fairly */
	memset(&first, 0, sizeof(first));
	memset(&second, 0, sizeof(second));
	parse(argc, argv, &first);
	check_outcome(&first, argc, argv);
	parse(argc, argv, &second);
	check_same(&first, &second);

	free(first.out);
	free(first.err);
	free(second.out);
	free(second.err);
	for (i = 0; i < argc; i++)
		free(argv[i]);
	return 0;
}
