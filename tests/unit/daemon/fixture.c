#include "fixture.h"

#include "osver.h"
#include "platform.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

unsigned char *fixture_bytes(const char *rel, size_t *ret_len)
{
	const char *dir = getenv("FLASHD_FIXTURES");
	char path[1024];
	snprintf(path, sizeof(path), "%s/modules/%s", dir ? dir : "../shared/fixtures", rel);
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "fixture missing: %s\n", path);
		abort();
	}
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		abort();
	fclose(f);
	*ret_len = (size_t)n;
	return buf;
}

struct image *fixture_load(const char *rel)
{
	size_t len;
	unsigned char *buf = fixture_bytes(rel, &len);
	struct image *img = NULL;
	struct error e;
	error_init(&e);
	/* A CRC mismatch still returns the image (image-corrupt): tests use that. */
	if (image_parse(buf, len, &img, &e) < 0 && !img)
		fprintf(stderr, "%s: %s\n", rel, e.message);
	error_clear(&e);
	free(buf);
	if (!img) {
		fprintf(stderr, "fixture not parseable: %s\n", rel);
		abort();
	}
	return img;
}

void fixture_facts(struct device_facts *f, const char *platform, const char *os,
		   const struct fixture_module *mods, size_t n)
{
	memset(f, 0, sizeof(*f));
	f->platform = platform_by_name(platform);
	snprintf(f->os_version, sizeof(f->os_version), "%s", os);
	snprintf(f->device_id, sizeof(f->device_id), "0123456789abcdef01234567");
	const struct os_release *r = osver_by_release(os);
	f->system_version = r ? r->system : 0;
	f->modules_known = true;
	for (size_t i = 0; i < n && i < DEVICE_FACTS_MAX_MODULES; i++) {
		struct installed_module *m = &f->modules[f->n_modules++];
		m->function = (uint8_t)module_function_from_letter(mods[i].letter_fn[0]);
		m->index = (uint8_t)mods[i].index;
		m->version = (uint16_t)mods[i].version;
		m->store = MODULE_STORE_MAIN;
		m->checked = m->passed = 30;
		m->deps[0].function = (uint8_t)mods[i].dep_fn;
		m->deps[0].index = (uint8_t)mods[i].dep_index;
		m->deps[0].version = (uint16_t)mods[i].dep_version;
	}
}
