/* Unit tests of the framing module: how a byte stream becomes packets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "framing.h"

#define MAX_PACKETS 16

/* Feeds chunks one by one and records every packet, copied. */
struct collected {
	char packets[MAX_PACKETS][256];
	size_t lens[MAX_PACKETS];
	size_t count;
	enum framer_status last;
};

static void feed(struct framer *f, const char *data, size_t len,
		 struct collected *out)
{
	struct byte_span input = { data, len };
	struct byte_span packet;

	while ((out->last = framer_next(f, &input, &packet)) == FRAMER_PACKET) {
		assert_true(out->count < MAX_PACKETS);
		assert_true(packet.len <= sizeof(out->packets[0]));
		memcpy(out->packets[out->count], packet.data, packet.len);
		out->lens[out->count++] = packet.len;
	}
}

static void assert_packet(const struct collected *c, size_t i,
			  const char *data, size_t len)
{
	assert_true(i < c->count);
	assert_int_equal(c->lens[i], len);
	assert_memory_equal(c->packets[i], data, len);
}

static void one_packet_in_one_read(void **state)
{
	struct framer f;
	struct collected c = { 0 };

	(void)state;
	framer_init(&f, 1024);
	feed(&f, "hello\n", 6, &c);
	assert_int_equal(c.count, 1);
	assert_packet(&c, 0, "hello\n", 6);
	assert_int_equal(c.last, FRAMER_NEED_MORE);
	assert_int_equal(framer_pending(&f), 0);
	framer_free(&f);
}

static void packet_split_across_reads(void **state)
{
	struct framer f;
	struct collected c = { 0 };

	(void)state;
	framer_init(&f, 1024);
	feed(&f, "fo", 2, &c);
	assert_int_equal(c.count, 0);
	assert_int_equal(framer_pending(&f), 2);
	feed(&f, "ur\n", 3, &c);
	assert_int_equal(c.count, 1);
	assert_packet(&c, 0, "four\n", 5);	/* no garbage between pieces */
	framer_free(&f);
}

static void one_byte_per_read(void **state)
{
	const char *stream = "ab\ncd\n";
	struct framer f;
	struct collected c = { 0 };
	size_t i;

	(void)state;
	framer_init(&f, 1024);
	for (i = 0; i < strlen(stream); i++)
		feed(&f, stream + i, 1, &c);
	assert_int_equal(c.count, 2);
	assert_packet(&c, 0, "ab\n", 3);
	assert_packet(&c, 1, "cd\n", 3);
	framer_free(&f);
}

static void pipelined_packets_in_one_read(void **state)
{
	struct framer f;
	struct collected c = { 0 };

	(void)state;
	framer_init(&f, 1024);
	feed(&f, "one\ntwo\nthree\nfo", 16, &c);
	assert_int_equal(c.count, 3);
	assert_packet(&c, 0, "one\n", 4);
	assert_packet(&c, 1, "two\n", 4);
	assert_packet(&c, 2, "three\n", 6);
	assert_int_equal(framer_pending(&f), 2);
	feed(&f, "ur\n", 3, &c);
	assert_packet(&c, 3, "four\n", 5);
	framer_free(&f);
}

static void empty_packet_is_a_packet(void **state)
{
	struct framer f;
	struct collected c = { 0 };

	(void)state;
	framer_init(&f, 1024);
	feed(&f, "\n\n", 2, &c);
	assert_int_equal(c.count, 2);
	assert_packet(&c, 0, "\n", 1);
	assert_packet(&c, 1, "\n", 1);
	framer_free(&f);
}

static void binary_bytes_are_data(void **state)
{
	static const char data[] = { 'a', '\0', '\r', (char)0xff, (char)0x80,
				     '\n' };
	struct framer f;
	struct collected c = { 0 };

	(void)state;
	framer_init(&f, 1024);
	feed(&f, data, 3, &c);
	feed(&f, data + 3, 3, &c);
	assert_int_equal(c.count, 1);
	assert_packet(&c, 0, data, sizeof(data));
	framer_free(&f);
}

static void trailing_partial_is_pending_not_a_packet(void **state)
{
	struct framer f;
	struct collected c = { 0 };

	(void)state;
	framer_init(&f, 1024);
	feed(&f, "done\nnot done", 13, &c);
	assert_int_equal(c.count, 1);
	assert_int_equal(framer_pending(&f), 8);
	framer_reset(&f);
	assert_int_equal(framer_pending(&f), 0);
	feed(&f, "fresh\n", 6, &c);
	assert_packet(&c, 1, "fresh\n", 6);	/* nothing of the old bytes */
	framer_free(&f);
}

static void packet_at_the_limit_is_accepted(void **state)
{
	struct framer f;
	struct collected c = { 0 };

	(void)state;
	framer_init(&f, 4);
	feed(&f, "ab", 2, &c);
	feed(&f, "c\n", 2, &c);
	assert_int_equal(c.count, 1);
	feed(&f, "xyz\n", 4, &c);	/* in one piece: no copy path */
	assert_int_equal(c.count, 2);
	framer_free(&f);
}

static void packet_over_the_limit_is_refused(void **state)
{
	struct framer f;
	struct collected c = { 0 };

	(void)state;
	framer_init(&f, 4);
	feed(&f, "abcd\n", 5, &c);	/* whole, one byte too long */
	assert_int_equal(c.last, FRAMER_TOO_LONG);
	assert_int_equal(c.count, 0);
	framer_reset(&f);
	feed(&f, "abc", 3, &c);
	feed(&f, "de", 2, &c);		/* grows past the limit unfinished */
	assert_int_equal(c.last, FRAMER_TOO_LONG);
	assert_true(framer_pending(&f) <= 4);
	framer_free(&f);
}

static void large_packet_memory_is_released(void **state)
{
	static char big[100000];
	struct framer f;
	struct collected c = { 0 };
	struct byte_span input, packet;

	(void)state;
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = '\n';
	framer_init(&f, sizeof(big));
	feed(&f, big, 10, &c);
	input.data = big + 10;
	input.len = sizeof(big) - 10;
	assert_int_equal(framer_next(&f, &input, &packet), FRAMER_PACKET);
	assert_int_equal(packet.len, sizeof(big));
	framer_reset(&f);
	assert_true(f.partial_cap <= 4096);
	framer_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(one_packet_in_one_read),
		cmocka_unit_test(packet_split_across_reads),
		cmocka_unit_test(one_byte_per_read),
		cmocka_unit_test(pipelined_packets_in_one_read),
		cmocka_unit_test(empty_packet_is_a_packet),
		cmocka_unit_test(binary_bytes_are_data),
		cmocka_unit_test(trailing_partial_is_pending_not_a_packet),
		cmocka_unit_test(packet_at_the_limit_is_accepted),
		cmocka_unit_test(packet_over_the_limit_is_refused),
		cmocka_unit_test(large_packet_memory_is_released),
	};

	return cmocka_run_group_tests_name("framing", tests, NULL, NULL);
}
