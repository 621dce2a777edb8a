/*
 * libFuzzer harness for the module parser (proto/image.c): any input must
 * give either an image or a catalogue error, never a crash, a leak or UB,
 * and what is returned must stay inside the buffer it describes.
 */
#include "image.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_image(const struct image *img, int depth)
{
	if (img->n_modules == 0 || img->n_modules > IMAGE_MAX_MODULES || depth > IMAGE_MAX_NESTING)
		abort();
	size_t next = 0;
	for (unsigned i = 0; i < img->n_modules; i++) {
		const struct image_module *m = &img->modules[i];
		char line[160];
		/* Modules tile the buffer in order, each inside it. */
		if (m->file_offset != next || m->size > img->len - m->file_offset)
			abort();
		next = m->file_offset + m->size;
		if (m->prefix_offset + IMAGE_PREFIX_SIZE > m->size)
			abort();
		if (m->n_prefix_ext > IMAGE_MAX_EXTENSIONS ||
		    m->n_suffix_ext > IMAGE_MAX_EXTENSIONS)
			abort();
		for (unsigned k = 0; k < m->n_suffix_ext; k++)
			if (m->suffix_ext[k].offset + m->suffix_ext[k].length > m->size)
				abort();
		for (unsigned k = 0; k < m->n_prefix_ext; k++)
			if (m->prefix_ext[k].offset + m->prefix_ext[k].length > m->size)
				abort();
		if (strlen(image_module_describe(m, line, sizeof(line))) >= sizeof(line))
			abort();
		if (m->name[sizeof(m->name) - 1] != '\0')
			abort();
		/* Touch the first and last byte: ASan checks they are ours. */
		const uint8_t *bytes = image_module_bytes(img, m);
		volatile uint8_t sink = bytes[0] ^ bytes[m->size - 1];
		(void)sink;
		if (m->inner)
			check_image(m->inner, depth + 1);
	}
	if (next != img->len)
		abort();
}

/* Parses and checks one input; returns the image when only CRCs failed. */
static struct image *parse_and_check(const uint8_t *data, size_t size)
{
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	int r = image_parse(data, size, &img, &err);
	if (r == 0 && (!img || error_is_set(&err)))
		abort();
	if (r < 0) {
		switch (err.code) {
		case ERR_IMAGE_NOT_A_MODULE:
		case ERR_IMAGE_TRUNCATED:
		case ERR_IMAGE_UNSUPPORTED:
		case ERR_FILE_UNREADABLE:
			if (img)
				abort();
			break;
		case ERR_IMAGE_CORRUPT:
			break; /* with or without the image (CRC mismatch / structure) */
		default:
			abort();
		}
		json_t *j = error_to_json(&err);
		if (!j)
			abort();
		json_decref(j);
	}
	if (img)
		check_image(img, 0);
	bool crc_failed = r < 0 && img && json_object_get(err.detail, "stored_crc");
	error_clear(&err);
	if (crc_failed)
		return img;
	image_free(img);
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct image *img = parse_and_check(data, size);
	if (!img)
		return 0;
	/* Nearly every mutation breaks the CRC, which stops parsing before the
	 * suffix, extensions and compressed data.  Fix the CRCs up and parse
	 * again so that the fuzzer reaches all of it. */
	uint8_t *copy = malloc(size);
	if (!copy)
		abort();
	memcpy(copy, data, size);
	for (unsigned i = 0; i < img->n_modules; i++) {
		const struct image_module *m = &img->modules[i];
		uint8_t *mod = copy + m->file_offset;
		uint32_t crc = image_crc32(mod, m->size - IMAGE_CRC_SIZE);
		uint8_t *p = mod + m->size - IMAGE_CRC_SIZE;
		p[0] = (uint8_t)(crc >> 24);
		p[1] = (uint8_t)(crc >> 16);
		p[2] = (uint8_t)(crc >> 8);
		p[3] = (uint8_t)crc;
	}
	image_free(img);
	image_free(parse_and_check(copy, size));
	free(copy);
	return 0;
}
