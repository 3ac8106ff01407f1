/* proctree.h - cost of a server measured from /proc: CPU time and PSS summed
 * over a process and all its descendants (pre-forked workers included). */
#ifndef PROCTREE_H
#define PROCTREE_H

#include <sys/types.h>

/* utime+stime+cutime+cstime over the tree, in seconds; -1 on error. The
 * children's fields cover workers that already exited and were reaped. */
double tree_cpu_seconds(pid_t root);
/* Sum of Pss from smaps_rollup over the tree, in KiB; -1 on error. */
long tree_pss_kib(pid_t root);
/* Number of processes in the tree. */
int tree_count(pid_t root);

#endif
