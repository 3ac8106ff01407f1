/* check: the invariant check every fuzz target uses.  A failed invariant
 * aborts, so libFuzzer reports it like a memory error, with the input. */
#ifndef AESD_FUZZ_CHECK_H
#define AESD_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "%s:%d: invariant failed: %s\n",   \
				__FILE__, __LINE__, #cond);                \
			abort();                                           \
		}                                                          \
	} while (0)

#endif
