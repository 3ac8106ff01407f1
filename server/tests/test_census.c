/* Unit tests of the census: places under the cap, the service's first
 * idle connection, stopped workers, overwritten entries, wake-ups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>

#include "census.h"
#include "log.h"
#include "mstime.h"

static struct census *census;

static int setup(void **state)
{
	(void)state;
	census = census_create(3);
	return census ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	census_destroy(census);
	return 0;
}

static void places_stop_at_the_limit(void **state)
{
	(void)state;
	census_set_open(census, 0, 2);
	census_set_open(census, 1, 1);
	assert_int_equal(census_open(census), 3);
	assert_true(census_take_place(census, 2, 0, 4));
	assert_int_equal(census_open(census), 4);
	/* the last place is taken: nobody gets one, whoever asks */
	assert_false(census_take_place(census, 0, 2, 4));
	assert_false(census_take_place(census, 2, 1, 4));
	assert_int_equal(census_open(census), 4);
	/* one more, only to swap with a connection about to close */
	assert_true(census_take_place(census, 1, 1, 5));
	assert_int_equal(census_open(census), 5);
}

static void an_ended_worker_frees_its_places(void **state)
{
	(void)state;
	census_set_open(census, 0, 3);
	census_set_open(census, 1, 1);
	census_forget(census, 0);
	assert_int_equal(census_open(census), 1);
	assert_true(census_take_place(census, 2, 0, 2));
}

static void nobody_idle_means_nobody_first(void **state)
{
	(void)state;
	assert_int_equal(census_first_idle(census, 0), CENSUS_NONE);
}

static void silent_before_spoke_then_longest_idle(void **state)
{
	long long now = now_ms();

	(void)state;
	census_publish_idle(census, 0, CENSUS_SPOKE, now - 5000);
	census_publish_idle(census, 1, CENSUS_SILENT, now - 100);
	census_publish_idle(census, 2, CENSUS_SILENT, now - 2000);
	/* the same answer, whoever asks */
	assert_int_equal(census_first_idle(census, 0), 2);
	assert_int_equal(census_first_idle(census, 1), 2);
	census_publish_idle(census, 2, CENSUS_NOT_IDLE, 0);
	assert_int_equal(census_first_idle(census, 0), 1);
	census_publish_idle(census, 1, CENSUS_NOT_IDLE, 0);
	assert_int_equal(census_first_idle(census, 2), 0);
}

static void a_stopped_worker_offers_nothing_but_to_itself(void **state)
{
	long long now = now_ms();

	(void)state;
	census_publish_idle(census, 0, CENSUS_SILENT, now - 5000);
	census_publish_idle(census, 1, CENSUS_SPOKE, now - 1000);
	census_mark_stopped(census, 0, true);
	assert_int_equal(census_first_idle(census, 1), 1);
	assert_int_equal(census_first_idle(census, 2), 1);
	/* worker 0 runs if it asks: the mark is the parent's, and late */
	assert_int_equal(census_first_idle(census, 0), 0);
	census_mark_stopped(census, 0, false);
	assert_int_equal(census_first_idle(census, 1), 0);
}

static void an_overwritten_count_lasts_until_its_worker_writes(void **state)
{
	(void)state;
	census_set_open(census, 1, 0x7fffffff);	/* a worker taken over */
	assert_false(census_take_place(census, 0, 0, 10));
	census_set_open(census, 1, 2);		/* its owner, next time round */
	assert_true(census_take_place(census, 0, 0, 10));
}

static bool readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

static void a_kick_wakes_only_its_worker_once(void **state)
{
	(void)state;
	assert_false(readable(census_kick_fd(census, 1)));
	census_kick(census, 1);
	census_kick(census, 1);
	assert_true(readable(census_kick_fd(census, 1)));
	assert_false(readable(census_kick_fd(census, 0)));
	census_kicked(census, 1);
	assert_false(readable(census_kick_fd(census, 1)));
	census_kicked(census, 2);	/* nothing to take: no error */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(places_stop_at_the_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(an_ended_worker_frees_its_places, setup, teardown),
		cmocka_unit_test_setup_teardown(nobody_idle_means_nobody_first, setup, teardown),
		cmocka_unit_test_setup_teardown(silent_before_spoke_then_longest_idle, setup, teardown),
		cmocka_unit_test_setup_teardown(a_stopped_worker_offers_nothing_but_to_itself, setup, teardown),
		cmocka_unit_test_setup_teardown(an_overwritten_count_lasts_until_its_worker_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(a_kick_wakes_only_its_worker_once, setup, teardown),
	};

	log_open(false);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
