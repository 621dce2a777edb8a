#include "fixture.h"

#include "osver.h"
#include "platform.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

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

static uint32_t le32(const unsigned char *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Stand-in for image_parse() while the parser is a placeholder: single modules only. */
static struct image *mini_parse(const unsigned char *buf, size_t len)
{
	static const size_t offsets[] = {0, 0x184, 0x200, 0x20, 0x10c};
	for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
		size_t o = offsets[i];
		if (o + 24 > len)
			continue;
		const unsigned char *p = buf + o;
		uint32_t start = le32(p), end = le32(p + 4);
		if (end <= start || end - start + 4 != len || p[14] == 0 || p[14] > 9)
			continue;
		struct image *img = calloc(1, sizeof(*img));
		img->data = malloc(len);
		memcpy(img->data, buf, len);
		img->len = len;
		img->n_modules = 1;
		struct image_module *m = &img->modules[0];
		m->size = len;
		m->prefix_offset = o;
		m->start = start;
		m->end = end;
		m->reserved = p[8];
		m->flags = p[9];
		m->version = le16(p + 10);
		m->platform_id = le16(p + 12);
		m->function = p[14];
		m->index = p[15];
		for (int d = 0; d < 2; d++) {
			m->deps[d].function = p[16 + 4 * d];
			m->deps[d].index = p[17 + 4 * d];
			m->deps[d].version = le16(p + 18 + 4 * d);
		}
		const unsigned char *c = buf + len - 4;
		m->crc_stored = (uint32_t)c[0] << 24 | c[1] << 16 | c[2] << 8 | c[3];
		m->crc_computed = (uint32_t)crc32(0, buf, (uInt)(len - 4));
		m->crc_ok = m->crc_stored == m->crc_computed;
		return img;
	}
	return NULL;
}

struct image *fixture_load(const char *rel)
{
	size_t len;
	unsigned char *buf = fixture_bytes(rel, &len);
	struct image *img = NULL;
	struct error e;
	error_init(&e);
	if (image_parse(buf, len, &img, &e) < 0 && !img)
		img = mini_parse(buf, len);
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
