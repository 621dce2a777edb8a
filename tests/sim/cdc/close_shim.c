/*
 * LD_PRELOAD shim for umockdev 0.17.16's close() race (docs/testing/umockdev.md#particle-cli):
 * with an ioctl handler attached to an emulated tty, every read/write/ioctl on
 * that fd is an exchange over a per-fd socket, and close() tears the socket
 * down without waiting for an exchange in flight on another thread.
 * node-serialport writes 'a' and closes the port on two threads after an
 * error, so particle-cli aborts now and then ("Error communicating with ioctl
 * socket").  This shim, placed before libumockdev-preload in LD_PRELOAD,
 * makes close() of a tty wait for the read/write/ioctl calls in flight.
 * Test-only; never installed.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static pthread_rwlock_t io_lock = PTHREAD_RWLOCK_INITIALIZER;

static bool is_tty_fd(int fd)
{
	char path[64], target[256];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	if (n <= 0)
		return false;
	target[n] = '\0';
	return !strncmp(target, "/dev/pts/", 9) || !strncmp(target, "/dev/tty", 8);
}

typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef int (*close_fn)(int);

#define NEXT(name, type)                                                                           \
	static type next_##name;                                                                   \
	if (!next_##name)                                                                          \
		next_##name = (type)dlsym(RTLD_NEXT, #name);

ssize_t read(int fd, void *buf, size_t n);
ssize_t read(int fd, void *buf, size_t n)
{
	NEXT(read, read_fn);
	bool tty = is_tty_fd(fd);
	if (tty)
		pthread_rwlock_rdlock(&io_lock);
	ssize_t r = next_read(fd, buf, n);
	if (tty)
		pthread_rwlock_unlock(&io_lock);
	return r;
}

ssize_t write(int fd, const void *buf, size_t n);
ssize_t write(int fd, const void *buf, size_t n)
{
	NEXT(write, write_fn);
	bool tty = is_tty_fd(fd);
	if (tty)
		pthread_rwlock_rdlock(&io_lock);
	ssize_t r = next_write(fd, buf, n);
	if (tty)
		pthread_rwlock_unlock(&io_lock);
	return r;
}

int ioctl(int fd, unsigned long request, ...);
int ioctl(int fd, unsigned long request, ...)
{
	NEXT(ioctl, ioctl_fn);
	va_list ap;
	va_start(ap, request);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	bool tty = is_tty_fd(fd);
	if (tty)
		pthread_rwlock_rdlock(&io_lock);
	int r = next_ioctl(fd, request, arg);
	if (tty)
		pthread_rwlock_unlock(&io_lock);
	return r;
}

int close(int fd);
int close(int fd)
{
	NEXT(close, close_fn);
	if (!is_tty_fd(fd))
		return next_close(fd);
	pthread_rwlock_wrlock(&io_lock);
	int r = next_close(fd);
	pthread_rwlock_unlock(&io_lock);
	return r;
}
