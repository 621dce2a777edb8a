/*
 * Ownership in one line.  A local declared with a cleanup attribute is
 * released when it goes out of scope, so a failure path is a plain `return`:
 *
 *	_cleanup_free_ uint8_t *buf = malloc(n);
 *	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
 *	_cleanup_(serial_port_closep) struct serial_port *p = ...;
 *	...
 *	*ret = TAKE_PTR(p);	(success: ownership leaves, the cleanup sees NULL)
 *
 * The idea is systemd's (src/fundamental/cleanup-fundamental.h,
 * DEFINE_TRIVIAL_CLEANUP_FUNC and _cleanup_); this header is flashd's own.
 * Needs GNU C (the cleanup attribute, typeof, statement expressions): the
 * project builds with c_std=gnu11.
 */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

/*
 * Declares `static inline void FUNCp(TYPE *p)` that calls FUNC(*p) when *p is
 * not NULL: the cleanup for a `TYPE` local owned through FUNC.
 */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
	static inline void func##p(type *p)                                                        \
	{                                                                                          \
		if (*p)                                                                            \
			func(*p);                                                                  \
	}

static inline void freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Closes a descriptor >= 0; errno is kept, so a failure path may still report it. */
static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		(void)close(
		    *fd); /* nothing to do about a failed close of a descriptor we give up */
		errno = saved;
	}
}
#define _cleanup_close_ _cleanup_(closep)

/* Takes the value out of an owning local and leaves it empty (NULL / -1). */
#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		__typeof__(p) *take_ptr_p_ = &(p);                                                 \
		__typeof__(p) take_ptr_v_ = *take_ptr_p_;                                          \
		*take_ptr_p_ = NULL;                                                               \
		take_ptr_v_;                                                                       \
	})
#define TAKE_FD(fd)                                                                                \
	({                                                                                         \
		int *take_fd_p_ = &(fd);                                                           \
		int take_fd_v_ = *take_fd_p_;                                                      \
		*take_fd_p_ = -1;                                                                  \
		take_fd_v_;                                                                        \
	})
