/*
 * Test helpers: real fixture modules ($FLASHD_FIXTURES) and synthetic device
 * facts.  Fixtures are parsed with the image parser.
 */
#pragma once

#include "device_facts.h"
#include "image.h"

#include <stddef.h>

/* Loads "$FLASHD_FIXTURES/modules/<rel>"; skips the cmocka test when the file is missing. */
struct image *fixture_load(const char *rel);
/* A copy of the file's bytes (caller frees). */
unsigned char *fixture_bytes(const char *rel, size_t *ret_len);

struct fixture_module {
	const char *letter_fn; /* "s", "u", "b", "a", "c" */
	int index;
	int version;
	int dep_fn, dep_index, dep_version; /* 0 = none */
};
/* Device facts for a platform and release with the given modules (main store, valid). */
void fixture_facts(struct device_facts *f, const char *platform, const char *os,
		   const struct fixture_module *mods, size_t n);
