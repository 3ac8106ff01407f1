/* Unit tests of the connection table: slots and generations, the idle
 * lists, whom to close at the cap, and the buffer account. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "conntable.h"

#define SECOND 1000

static struct conntable table;

static int setup(void **state)
{
	(void)state;
	return conntable_init(&table, 4);
}

static int teardown(void **state)
{
	uint32_t id;

	(void)state;
	for (id = 0; id < table.used; id++)
		framer_free(&table.slots[id].conn.framer);
	conntable_free(&table);
	return 0;
}

/* A new connection accepted at ms, idle (nothing received yet). */
static uint32_t accepted(long long ms)
{
	uint32_t id;
	struct conn *c = conntable_add(&table, &id);

	assert_non_null(c);
	memset(c, 0, sizeof(*c));
	framer_init(&c->framer, 1 << 20);
	c->since_ms = ms;
	conntable_update(&table, id);
	return id;
}

static struct conn *conn(uint32_t id)
{
	return &table.slots[id].conn;
}

/* The client sent len bytes of a packet, no newline. */
static void partial(uint32_t id, size_t len)
{
	char *bytes = malloc(len);
	struct byte_span in = { bytes, len }, packet;

	memset(bytes, 'x', len);
	conn(id)->heard_from = true;
	assert_int_equal(framer_next(&conn(id)->framer, &in, &packet),
			 FRAMER_NEED_MORE);
	free(bytes);
	conntable_update(&table, id);
}

/* It finished its packet and was answered at ms: idle after an exchange. */
static void answered(uint32_t id, long long ms)
{
	framer_release(&conn(id)->framer);
	conn(id)->heard_from = true;
	conn(id)->since_ms = ms;
	conntable_update(&table, id);
}

static void slots_are_reused_with_a_new_generation(void **state)
{
	uint32_t a, b, again;
	uint32_t generation;

	(void)state;
	a = accepted(0);
	b = accepted(0);
	assert_int_not_equal(a, b);
	generation = table.slots[a].generation;
	assert_non_null(conntable_find(&table, a, generation));
	conntable_remove(&table, a);
	/* an event fetched for the old connection finds nothing */
	assert_null(conntable_find(&table, a, generation));
	again = accepted(0);
	assert_int_equal(again, a);
	assert_null(conntable_find(&table, a, generation));
	assert_non_null(conntable_find(&table, a, table.slots[a].generation));
	assert_int_equal(table.open, 2);
}

static void full_table_refuses(void **state)
{
	uint32_t id;
	int i;

	(void)state;
	for (i = 0; i < 4; i++)
		accepted(0);
	assert_null(conntable_add(&table, &id));
	assert_int_equal(table.open, 4);
}

static void nobody_idle_for_a_second_is_not_evictable(void **state)
{

	(void)state;
	accepted(5000);
	assert_int_equal(conntable_evictable(&table, 5000 + SECOND - 1),
			 CONN_NONE);
	assert_int_not_equal(conntable_evictable(&table, 5000 + SECOND),
			     CONN_NONE);
}

static void silent_ones_go_first_even_when_younger(void **state)
{
	uint32_t old_exchange, silent;

	(void)state;
	old_exchange = accepted(0);
	answered(old_exchange, 100);
	silent = accepted(10 * SECOND);
	/* the silent one is not a second old: nobody is chosen yet, the
	 * established client is not taken instead */
	assert_int_equal(conntable_evictable(&table, 10 * SECOND + 500),
			 CONN_NONE);
	assert_int_equal(conntable_evictable(&table, 11 * SECOND), silent);
	conntable_remove(&table, silent);
	assert_int_equal(conntable_evictable(&table, 11 * SECOND),
			 old_exchange);
}

static void longest_idle_first_and_relisted_when_idle_anew(void **state)
{
	uint32_t a, b;

	(void)state;
	a = accepted(0);
	b = accepted(0);
	answered(a, 1000);
	answered(b, 2000);
	assert_int_equal(conntable_evictable(&table, 5000), a);
	answered(a, 3000);	/* a exchanged again: now b is the oldest */
	assert_int_equal(conntable_evictable(&table, 5000), b);
	/* an update without news keeps the order */
	conntable_update(&table, b);
	assert_int_equal(conntable_evictable(&table, 5000), b);
}

static void a_packet_under_way_is_never_evictable(void **state)
{
	uint32_t id;

	(void)state;
	id = accepted(0);
	partial(id, 10);
	assert_int_equal(conntable_evictable(&table, 100 * SECOND),
			 CONN_NONE);
	conn(id)->sending = true;	/* nor is a response under way */
	framer_release(&conn(id)->framer);
	conntable_update(&table, id);
	assert_int_equal(conntable_evictable(&table, 100 * SECOND),
			 CONN_NONE);
}

static void buffered_bytes_are_accounted_and_the_largest_named(void **state)
{
	uint32_t small, big;

	(void)state;
	small = accepted(0);
	big = accepted(0);
	assert_int_equal(conntable_largest(&table), CONN_NONE);
	partial(small, 100);
	partial(big, 5000);
	assert_int_equal(table.buffered, conn_buffered(conn(small)) +
					 conn_buffered(conn(big)));
	assert_true(conn_buffered(conn(big)) >= 5000);
	assert_int_equal(conntable_largest(&table), big);
	conntable_remove(&table, big);
	framer_free(&conn(big)->framer);
	assert_int_equal(table.buffered, conn_buffered(conn(small)));
	assert_int_equal(conntable_largest(&table), small);
	answered(small, 0);	/* its buffer is released when it goes idle */
	assert_int_equal(table.buffered, 0);
}

/* Of two connections buffering as much, the one whose packet has been
 * under way longer goes first. */
static void of_equals_the_one_holding_longest(void **state)
{
	uint32_t young, old;

	(void)state;
	young = accepted(0);
	old = accepted(0);
	conn(young)->since_ms = 9000;
	conn(old)->since_ms = 2000;
	partial(young, 5000);
	partial(old, 5000);
	assert_int_equal(conntable_largest(&table), old);
	conn(old)->since_ms = 9500;
	assert_int_equal(conntable_largest(&table), young);
}

/* Its packet waits for the lock (the bytes kept unparsed). */
static void appending(uint32_t id)
{
	conn(id)->heard_from = true;
	conn(id)->appending = true;
	conn(id)->unparsed_len = 4;
	conntable_update(&table, id);
}

static void packets_wait_for_the_lock_in_order_and_are_not_idle(void **state)
{
	uint32_t a, b, c;

	(void)state;
	a = accepted(0);
	b = accepted(0);
	c = accepted(0);
	assert_int_equal(conntable_first_appending(&table), CONN_NONE);
	appending(b);
	appending(a);
	assert_int_equal(conntable_first_appending(&table), b);
	/* tried again and still waiting: it keeps its place */
	conntable_update(&table, b);
	assert_int_equal(conntable_first_appending(&table), b);
	/* waiting is not idle: only c may be closed to make room */
	assert_int_equal(conntable_evictable(&table, 100 * SECOND), c);
	conn(b)->appending = false;
	conn(b)->unparsed_len = 0;
	answered(b, 50 * SECOND);
	assert_int_equal(conntable_first_appending(&table), a);
	conntable_remove(&table, a);
	assert_int_equal(conntable_first_appending(&table), CONN_NONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(slots_are_reused_with_a_new_generation, setup, teardown),
		cmocka_unit_test_setup_teardown(full_table_refuses, setup, teardown),
		cmocka_unit_test_setup_teardown(nobody_idle_for_a_second_is_not_evictable, setup, teardown),
		cmocka_unit_test_setup_teardown(silent_ones_go_first_even_when_younger, setup, teardown),
		cmocka_unit_test_setup_teardown(longest_idle_first_and_relisted_when_idle_anew, setup, teardown),
		cmocka_unit_test_setup_teardown(a_packet_under_way_is_never_evictable, setup, teardown),
		cmocka_unit_test_setup_teardown(buffered_bytes_are_accounted_and_the_largest_named, setup, teardown),
		cmocka_unit_test_setup_teardown(of_equals_the_one_holding_longest, setup, teardown),
		cmocka_unit_test_setup_teardown(packets_wait_for_the_lock_in_order_and_are_not_idle, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
