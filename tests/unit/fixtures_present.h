/*
 * The real firmware files a unit test binary reads, checked before its first test.  A missing
 * one (neither ../shared/fixtures nor the set scripts/fetch-fixtures fetched has it) makes the
 * whole binary a TAP skip that names the file: cmocka 1.1's own skip() prints "not ok # SKIP",
 * which meson counts as a failure.
 */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* NULL-terminated list of paths under $FLASHD_FIXTURES/modules. */
static inline void fixtures_present_or_skip(const char *const *rels)
{
	const char *dir = getenv("FLASHD_FIXTURES");
	for (; *rels; rels++) {
		char path[1024];
		snprintf(path, sizeof(path), "%s/modules/%s", dir ? dir : "../shared/fixtures",
			 *rels);
		if (access(path, R_OK) != 0) {
			printf("1..0 # SKIP fixture %s missing (run scripts/fetch-fixtures)\n",
			       path);
			exit(0);
		}
	}
}
