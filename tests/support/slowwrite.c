/*
 * slowwrite: an LD_PRELOAD shim that makes pwrite(2) slow, the way a busy or failing disk is,
 * so a test can see what a tool reports while its writes are still in flight.
 *
 * Chosen through the environment, read at each call:
 *   SLOWWRITE_MATCH    only files whose path (readlink of /proc/self/fd/N) contains this
 *                      string are slowed; unset: every file
 *   SLOWWRITE_USEC     how long each such call sleeps before writing (default 1000000)
 *   SLOWWRITE_TRIGGER  only while this file exists (unset: always)
 *
 * Built by the tests with gcc at run time (support::build_shim).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static void maybe_sleep(int fd)
{
	const char *trigger = getenv("SLOWWRITE_TRIGGER");
	if (trigger != NULL && access(trigger, F_OK) != 0)
		return;
	const char *match = getenv("SLOWWRITE_MATCH");
	if (match != NULL) {
		char link[64], path[4096];
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, path, sizeof path - 1);
		if (n < 0)
			return;
		path[n] = '\0';
		if (strstr(path, match) == NULL)
			return;
	}
	const char *usec = getenv("SLOWWRITE_USEC");
	usleep(usec != NULL ? (useconds_t) atol(usec) : 1000000);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);
	maybe_sleep(fd);
	if (real == NULL)
		real = (ssize_t (*)(int, const void *, size_t, off_t)) dlsym(RTLD_NEXT, "pwrite");
	return real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);
	maybe_sleep(fd);
	if (real == NULL)
		real = (ssize_t (*)(int, const void *, size_t, off_t)) dlsym(RTLD_NEXT, "pwrite64");
	return real(fd, buf, count, offset);
}
