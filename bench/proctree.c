/* proctree.c - walk /proc for a process tree and sum its CPU and PSS. */
#include "proctree.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct proc {
	pid_t pid, ppid;
	unsigned long long ticks;	/* utime + stime + cutime + cstime */
};

static int read_stat(pid_t pid, struct proc *p)
{
	char path[64], buf[1024];
	FILE *f;
	size_t n;
	char *s;
	unsigned long long ut, st;
	long long cut, cst;
	int ppid;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	s = strrchr(buf, ')');	/* comm may contain spaces */
	if (!s)
		return -1;
	/* fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt
	 * majflt cmajflt utime stime cutime cstime */
	if (sscanf(s + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld",
		   &ppid, &ut, &st, &cut, &cst) != 5)
		return -1;
	p->pid = pid;
	p->ppid = ppid;
	p->ticks = ut + st + (unsigned long long)cut + (unsigned long long)cst;
	return 0;
}

/* Fills *out with the tree rooted at root; returns its size or -1. */
static int collect(pid_t root, struct proc **out)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	struct proc *all = NULL, *tree;
	size_t n = 0, cap = 0;
	int nt = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);

		if (*end || pid <= 0)
			continue;
		if (n == cap) {
			struct proc *v = reallocarray(all, cap ? cap * 2 : 512, sizeof(*v));

			if (!v)
				break;
			all = v;
			cap = cap ? cap * 2 : 512;
		}
		if (read_stat((pid_t)pid, &all[n]) == 0)
			n++;
	}
	closedir(d);
	tree = calloc(n ? n : 1, sizeof(*tree));
	if (!tree) {
		free(all);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (all[i].pid == root)
			tree[nt++] = all[i];
	/* breadth-first: each pass adds children of what is already in */
	for (int i = 0; i < nt; i++)
		for (size_t j = 0; j < n; j++)
			if (all[j].ppid == tree[i].pid)
				tree[nt++] = all[j];
	free(all);
	*out = tree;
	return nt;
}

double tree_cpu_seconds(pid_t root)
{
	struct proc *t;
	int n = collect(root, &t);
	unsigned long long ticks = 0;

	if (n <= 0)
		return -1;
	for (int i = 0; i < n; i++)
		ticks += t[i].ticks;
	free(t);
	return (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

static long pss_of(pid_t pid)
{
	char path[64], line[256];
	FILE *f;
	long kib = -1;

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Pss: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

long tree_pss_kib(pid_t root)
{
	struct proc *t;
	int n = collect(root, &t);
	long sum = 0;

	if (n <= 0)
		return -1;
	for (int i = 0; i < n; i++) {
		long k = pss_of(t[i].pid);

		if (k > 0)
			sum += k;
	}
	free(t);
	return sum;
}

int tree_count(pid_t root)
{
	struct proc *t;
	int n = collect(root, &t);

	if (n > 0)
		free(t);
	return n;
}
