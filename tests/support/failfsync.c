/*
 * failfsync: an LD_PRELOAD shim that makes fsync(2) and fdatasync(2) fail with EIO, the
 * way a disk that lost written pages reports it (PostgreSQL's "fsyncgate").
 *
 * Which calls fail is chosen through the environment, read at each call:
 *   FAILFSYNC_MATCH    only files whose path (readlink of /proc/self/fd/N) contains this
 *                      string are candidates; unset: every file and directory
 *   FAILFSYNC_SKIP     let this many candidate calls succeed first (default 0)
 *   FAILFSYNC_TRIGGER  only while this file exists (unset: always)
 *   FAILFSYNC_LOG      append one line per failed call: "<function> <path>"
 *   FAILFSYNC_RECORD   append one line per call, failed or not: "<function> <path>", in call
 *                      order (with FAILFSYNC_TRIGGER naming a missing file, nothing fails and
 *                      the shim only records which files and directories were fsync'ed)
 * Once a call has failed, every later candidate call fails too: after a real EIO the kernel
 * may have dropped the dirty pages, so a later fsync "succeeding" would prove nothing.
 *
 * Built by tests/faults.rs with gcc at run time: gcc -shared -fPIC -o failfsync.so this.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_long candidates;
static atomic_int failing;

static void append_line(const char *log, const char *fn, const char *path)
{
	if (log == NULL)
		return;
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (fd < 0)
		return;
	char line[4200];
	int n = snprintf(line, sizeof line, "%s %s\n", fn, path);
	if (n > 0)
		(void) write(fd, line, (size_t) n < sizeof line ? (size_t) n : sizeof line - 1);
	close(fd);
}

static void log_failure(const char *fn, const char *path)
{
	append_line(getenv("FAILFSYNC_LOG"), fn, path);
}

static int should_fail(const char *fn, int fd)
{
	char link[64], path[4096];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof path - 1);
	if (n < 0)
		return 0;
	path[n] = '\0';
	append_line(getenv("FAILFSYNC_RECORD"), fn, path);

	const char *match = getenv("FAILFSYNC_MATCH");
	if (match != NULL && strstr(path, match) == NULL)
		return 0;
	if (!atomic_load(&failing)) {
		const char *trigger = getenv("FAILFSYNC_TRIGGER");
		if (trigger != NULL && access(trigger, F_OK) != 0)
			return 0;
		const char *skip = getenv("FAILFSYNC_SKIP");
		long seen = atomic_fetch_add(&candidates, 1);
		if (skip != NULL && seen < atol(skip))
			return 0;
		atomic_store(&failing, 1);
	}
	log_failure(fn, path);
	return 1;
}

int fsync(int fd)
{
	static int (*real)(int);
	if (should_fail("fsync", fd)) {
		errno = EIO;
		return -1;
	}
	if (real == NULL)
		real = (int (*)(int)) dlsym(RTLD_NEXT, "fsync");
	return real(fd);
}

int fdatasync(int fd)
{
	static int (*real)(int);
	if (should_fail("fdatasync", fd)) {
		errno = EIO;
		return -1;
	}
	if (real == NULL)
		real = (int (*)(int)) dlsym(RTLD_NEXT, "fdatasync");
	return real(fd);
}
