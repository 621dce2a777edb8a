#include "osver.h"

#include "platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osver_table.h"

#define N_RELEASES (sizeof(releases) / sizeof(releases[0]))

unsigned osver_count(void)
{
	return N_RELEASES;
}

const struct os_release *osver_at(unsigned i)
{
	return i < N_RELEASES ? &releases[i] : NULL;
}

const struct os_release *osver_by_release(const char *version)
{
	for (size_t i = 0; version && i < N_RELEASES; i++)
		if (strcmp(releases[i].version, version) == 0)
			return &releases[i];
	return NULL;
}

const struct os_release *osver_by_system_version(uint16_t system_version)
{
	const struct os_release *pre = NULL;
	for (size_t i = 0; system_version && i < N_RELEASES; i++) {
		if (releases[i].system != system_version)
			continue;
		if (!releases[i].prerelease)
			return &releases[i];
		pre = &releases[i];
	}
	return pre;
}

static bool is_system(int module_function)
{
	return module_function == MODULE_FUNCTION_SYSTEM || module_function == MODULE_FUNCTION_MONO;
}

const char *osver_release_for(int module_function, uint16_t module_version)
{
	if (is_system(module_function)) {
		const struct os_release *r = osver_by_system_version(module_version);
		return r ? r->version : NULL;
	}
	if (module_function == MODULE_FUNCTION_BOOTLOADER && module_version) {
		/* Bootloader versions are shared by several releases: name one only if unique. */
		const char *found = NULL;
		for (size_t i = 0; i < N_RELEASES; i++) {
			const struct os_release *r = &releases[i];
			bool shipped = false;
			for (unsigned b = 0; b < r->n_builds; b++)
				shipped |= r->builds[b].bootloader == module_version &&
					   !(r->builds[b].inferred & OSVER_INFERRED_BOOTLOADER);
			if (!shipped)
				continue;
			if (found)
				return NULL;
			found = r->version;
		}
		return found;
	}
	return NULL;
}

bool osver_ships_on(const struct os_release *r, int platform_id)
{
	return r && platform_id >= 0 && platform_id < 64 &&
	       (r->platforms & (UINT64_C(1) << platform_id));
}

const struct os_build *osver_build_for(const struct os_release *r, int platform_id)
{
	if (!osver_ships_on(r, platform_id))
		return NULL;
	for (unsigned b = 0; b < r->n_builds; b++)
		if (r->builds[b].platforms & (UINT64_C(1) << platform_id))
			return &r->builds[b];
	return NULL;
}

uint16_t osver_module_version(const struct os_release *r, int platform_id, int module_function)
{
	const struct os_build *b = osver_build_for(r, platform_id);
	if (!b)
		return 0;
	if (is_system(module_function))
		return r->system;
	if (module_function == MODULE_FUNCTION_BOOTLOADER)
		return b->bootloader;
	if (module_function == MODULE_FUNCTION_RADIO_STACK)
		return b->radio_stack;
	return 0;
}

bool osver_module_inferred(const struct os_release *r, int platform_id, int module_function)
{
	const struct os_build *b = osver_build_for(r, platform_id);
	if (!b)
		return false;
	if (is_system(module_function))
		return r->inferred & OSVER_INFERRED_SYSTEM;
	if (module_function == MODULE_FUNCTION_BOOTLOADER)
		return b->inferred & OSVER_INFERRED_BOOTLOADER;
	if (module_function == MODULE_FUNCTION_RADIO_STACK)
		return b->inferred & OSVER_INFERRED_RADIO_STACK;
	return false;
}

/*
 * Lookups that name releases in messages prefer what is certain: first final
 * releases with values read from sources, then pre-releases, then inferred
 * values.
 */
enum pass { PASS_FINAL_SOURCED, PASS_ANY_SOURCED, PASS_ANY, N_PASSES };

static bool pass_admits(enum pass pass, const struct os_release *r, int platform_id,
			int module_function)
{
	if (pass == PASS_ANY)
		return true;
	if (osver_module_inferred(r, platform_id, module_function))
		return false;
	return pass == PASS_ANY_SOURCED || !r->prerelease;
}

const struct os_release *osver_first_providing(int platform_id, int module_function,
					       uint16_t min_version)
{
	for (int pass = 0; pass < N_PASSES; pass++) {
		for (size_t i = 0; i < N_RELEASES; i++) {
			const struct os_release *r = &releases[i];
			uint16_t v = osver_module_version(r, platform_id, module_function);
			if (v != 0 && v >= min_version &&
			    pass_admits((enum pass)pass, r, platform_id, module_function))
				return r;
		}
	}
	return NULL;
}

bool osver_span(int platform_id, int module_function, uint16_t version,
		const struct os_release **ret_first, const struct os_release **ret_last)
{
	*ret_first = *ret_last = NULL;
	for (int pass = 0; version != 0 && pass < N_PASSES && !*ret_first; pass++) {
		for (size_t i = 0; i < N_RELEASES; i++) {
			const struct os_release *r = &releases[i];
			if (osver_module_version(r, platform_id, module_function) != version ||
			    !pass_admits((enum pass)pass, r, platform_id, module_function))
				continue;
			if (!*ret_first)
				*ret_first = r;
			*ret_last = r;
		}
	}
	return *ret_first != NULL;
}

unsigned osver_nearest(const char *version, const struct os_release **out, unsigned max)
{
	/* Final releases only: the closest below and above, then outward. */
	const struct os_release *finals[N_RELEASES];
	size_t n_finals = 0, above = 0;
	for (size_t i = 0; i < N_RELEASES; i++)
		if (!releases[i].prerelease)
			finals[n_finals++] = &releases[i];
	int M, m, p;
	if (!version || osver_parse(version, &M, &m, &p) < 0)
		above = n_finals; /* not a version: the newest ones */
	else
		while (above < n_finals && osver_compare(finals[above]->version, version) <= 0)
			above++;
	size_t below = above; /* finals[below - 1] is the closest at or below */
	unsigned n = 0;
	while (n < max && (below > 0 || above < n_finals)) {
		if (below > 0)
			out[n++] = finals[--below];
		if (n < max && above < n_finals)
			out[n++] = finals[above++];
	}
	return n;
}

int osver_parse(const char *s, int *ret_major, int *ret_minor, int *ret_patch)
{
	int major, minor, patch, n = 0;
	if (!s || sscanf(s, "%d.%d.%d%n", &major, &minor, &patch, &n) != 3)
		return -1;
	if (s[n] != '\0' && s[n] != '-' && s[n] != '+')
		return -1;
	if (major < 0 || minor < 0 || patch < 0 || major > 99 || minor > 99 || patch > 99)
		return -1;
	*ret_major = major;
	*ret_minor = minor;
	*ret_patch = patch;
	return 0;
}

/* Pre-release part ("rc.2") compared as semver does: dot-separated
 * identifiers, numeric ones numerically and below alphanumeric ones. */
static int compare_prerelease(const char *a, const char *b)
{
	while (*a || *b) {
		if (!*a || !*b)
			return *a ? 1 : -1; /* fewer identifiers sort first */
		size_t la = strcspn(a, "."), lb = strcspn(b, ".");
		bool na = la > 0 && strspn(a, "0123456789") >= la;
		bool nb = lb > 0 && strspn(b, "0123456789") >= lb;
		int c;
		if (na && nb) {
			unsigned long va = strtoul(a, NULL, 10), vb = strtoul(b, NULL, 10);
			c = va < vb ? -1 : va > vb;
		} else if (na != nb) {
			c = na ? -1 : 1;
		} else {
			c = strncmp(a, b, la < lb ? la : lb);
			if (c == 0)
				c = la < lb ? -1 : la > lb;
		}
		if (c)
			return c < 0 ? -1 : 1;
		a += la + (a[la] == '.');
		b += lb + (b[lb] == '.');
	}
	return 0;
}

/* The pre-release identifiers of a version ("rc.2" of "4.0.1-rc.2+lto"), or false. */
static bool prerelease_of(const char *s, char *buf, size_t size)
{
	const char *dash = s ? strchr(s, '-') : NULL;
	if (!dash)
		return false;
	snprintf(buf, size, "%.*s", (int)strcspn(dash + 1, "+"), dash + 1);
	return true;
}

int osver_compare(const char *a, const char *b)
{
	int a1 = 0, a2 = 0, a3 = 0, b1 = 0, b2 = 0, b3 = 0;
	osver_parse(a, &a1, &a2, &a3);
	osver_parse(b, &b1, &b2, &b3);
	if (a1 != b1)
		return a1 < b1 ? -1 : 1;
	if (a2 != b2)
		return a2 < b2 ? -1 : 1;
	if (a3 != b3)
		return a3 < b3 ? -1 : 1;
	char pa[64] = "", pb[64] = "";
	bool has_a = prerelease_of(a, pa, sizeof(pa)), has_b = prerelease_of(b, pb, sizeof(pb));
	if (has_a != has_b)
		return has_a ? -1 : 1; /* a pre-release comes before its release */
	return has_a ? compare_prerelease(pa, pb) : 0;
}
