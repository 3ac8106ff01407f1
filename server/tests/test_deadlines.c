/* Unit tests of the deadline heap: order, moves, clears, against a model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "deadlines.h"

static void empty_has_no_first(void **state)
{
	struct deadlines d;
	struct deadline first;

	(void)state;
	assert_int_equal(deadlines_init(&d, 4), 0);
	assert_false(deadlines_first(&d, &first));
	deadlines_clear(&d, 2);		/* clearing what is not set is harmless */
	deadlines_set(&d, 9, 1);	/* an id out of range is ignored */
	assert_false(deadlines_first(&d, &first));
	deadlines_free(&d);
}

static void earliest_first_and_moves(void **state)
{
	struct deadlines d;
	struct deadline first;

	(void)state;
	assert_int_equal(deadlines_init(&d, 8), 0);
	deadlines_set(&d, 3, 300);
	deadlines_set(&d, 1, 100);
	deadlines_set(&d, 2, 200);
	assert_true(deadlines_first(&d, &first));
	assert_int_equal(first.id, 1);
	assert_int_equal(first.at_ms, 100);
	deadlines_set(&d, 1, 400);	/* moved later */
	assert_true(deadlines_first(&d, &first));
	assert_int_equal(first.id, 2);
	deadlines_set(&d, 3, 50);	/* moved earlier */
	assert_true(deadlines_first(&d, &first));
	assert_int_equal(first.id, 3);
	deadlines_clear(&d, 3);
	assert_true(deadlines_first(&d, &first));
	assert_int_equal(first.id, 2);
	assert_int_equal(d.count, 2);
	deadlines_free(&d);
}

/* Random sets and clears against a plain array: the first is always the
 * model's minimum, and the count matches. */
static void agrees_with_a_model(void **state)
{
	enum { IDS = 64, STEPS = 20000 };
	long long model[IDS];
	struct deadlines d;
	unsigned seed = 12345;
	int step, id;

	(void)state;
	assert_int_equal(deadlines_init(&d, IDS), 0);
	for (id = 0; id < IDS; id++)
		model[id] = -1;
	for (step = 0; step < STEPS; step++) {
		struct deadline first;
		long long best = -1;
		unsigned count = 0;

		id = (int)(rand_r(&seed) % IDS);
		if (rand_r(&seed) % 4 == 0) {
			deadlines_clear(&d, (uint32_t)id);
			model[id] = -1;
		} else {
			model[id] = rand_r(&seed) % 1000;
			deadlines_set(&d, (uint32_t)id, model[id]);
		}
		for (id = 0; id < IDS; id++) {
			if (model[id] < 0)
				continue;
			count++;
			if (best < 0 || model[id] < best)
				best = model[id];
		}
		assert_int_equal(d.count, count);
		if (count == 0) {
			assert_false(deadlines_first(&d, &first));
			continue;
		}
		assert_true(deadlines_first(&d, &first));
		assert_int_equal(first.at_ms, best);
		assert_int_equal(model[first.id], best);
	}
	deadlines_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty_has_no_first),
		cmocka_unit_test(earliest_first_and_moves),
		cmocka_unit_test(agrees_with_a_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
