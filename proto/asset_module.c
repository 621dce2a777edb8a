#include "asset_module.h"

#include "bytes.h"
#include "platform.h"

#include <nettle/sha2.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define PREFIX_SIZE	 24u
#define SUFFIX_TAIL	 36u /* reserved u16, SHA-256, suffix size u16 */
#define EXT_HASH	 0x0010
#define EXT_NAME	 0x0011
#define EXT_PRODUCT_DATA 0x0001
#define FLAG_DROP_INFO	 0x01
#define FLAG_PREFIX_EXTS 0x10

static void sha256(const uint8_t *buf, size_t len, uint8_t out[32])
{
	struct sha256_ctx ctx;
	sha256_init(&ctx);
	sha256_update(&ctx, len, buf);
	sha256_digest(&ctx, 32, out);
}

static uint32_t crc32_of(const uint8_t *buf, size_t len)
{
	uLong crc = crc32(0L, Z_NULL, 0);
	while (len > 0) {
		uInt n = len > 0x40000000u ? 0x40000000u : (uInt)len;
		crc = crc32(crc, buf, n);
		buf += n;
		len -= n;
	}
	return (uint32_t)crc;
}

int asset_module_build(const char *name, const uint8_t *data, size_t size, uint8_t **ret,
		       size_t *ret_len, struct error *err)
{
	*ret = NULL;
	*ret_len = 0;
	size_t name_len = strlen(name);
	if (name_len == 0 || name_len > ASSET_NAME_MAX) {
		error_set(err, ERR_BUNDLE_ASSET_MISMATCH,
			  "the asset name \"%.80s\" is %s: Device OS keeps assets under names of "
			  "1 to %u bytes",
			  name, name_len ? "too long" : "empty", ASSET_NAME_MAX);
		error_detail_str(err, "asset", name);
		return -1;
	}
	size_t suffix = 38 + (4 + name_len) + 10 + SUFFIX_TAIL;
	if (size > ASSET_MODULE_MAX - PREFIX_SIZE - suffix - 4) {
		error_set(err, ERR_BUNDLE_ASSET_MISMATCH,
			  "the asset %s (%zu bytes) is larger than any device's asset storage",
			  name, size);
		error_detail_str(err, "asset", name);
		error_detail_int(err, "size", (long long)size);
		return -1;
	}
	size_t len = PREFIX_SIZE + size + suffix + 4;
	uint8_t *m = calloc(1, len);
	if (!m)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	/* module_info_t: start, end, reserved, flags, version, platform, function, index */
	bytes_put_le32(m + 0, 0);
	bytes_put_le32(m + 4, (uint32_t)(len - 4));
	m[9] = FLAG_DROP_INFO;
	m[14] = MODULE_FUNCTION_ASSET; /* platform (12) 0, index (15) 0 */
	if (size)
		memcpy(m + PREFIX_SIZE, data, size);
	uint8_t *p = m + PREFIX_SIZE + size;
	bytes_put_le16(p, EXT_HASH);
	bytes_put_le16(p + 2, 38);
	p[4] = 0;  /* SHA-256 */
	p[5] = 32; /* its length */
	sha256(data, size, p + 6);
	p += 38;
	bytes_put_le16(p, EXT_NAME);
	bytes_put_le16(p + 2, (uint16_t)(4 + name_len));
	memcpy(p + 4, name, name_len);
	p += 4 + name_len;
	bytes_put_le16(p, EXT_PRODUCT_DATA);
	bytes_put_le16(p + 2, 10);
	bytes_put_le16(p + 4, 0xffff);
	bytes_put_le16(p + 6, 0xffff); /* product id */
	bytes_put_le16(p + 8, 0xffff); /* product version */
	p += 10;
	/* tail: reserved, SHA-256 of everything before it, suffix size */
	bytes_put_le16(p, 0);
	sha256(m, (size_t)(p + 2 - m), p + 2);
	bytes_put_le16(p + 34, (uint16_t)suffix);
	uint32_t crc = crc32_of(m, len - 4);
	m[len - 4] = (uint8_t)(crc >> 24);
	m[len - 3] = (uint8_t)(crc >> 16);
	m[len - 2] = (uint8_t)(crc >> 8);
	m[len - 1] = (uint8_t)crc;
	*ret = m;
	*ret_len = len;
	return 0;
}

int asset_module_read(const uint8_t *buf, size_t len, struct asset_module_info *out)
{
	memset(out, 0, sizeof(*out));
	if (len < PREFIX_SIZE + SUFFIX_TAIL + 4)
		return -1;
	uint32_t start = bytes_le32(buf), end = bytes_le32(buf + 4);
	if (buf[14] != MODULE_FUNCTION_ASSET || !(buf[9] & FLAG_DROP_INFO) ||
	    (buf[9] & FLAG_PREFIX_EXTS) || end < start || (size_t)(end - start) + 4 != len)
		return -1;
	uint32_t crc = (uint32_t)buf[len - 4] << 24 | (uint32_t)buf[len - 3] << 16 |
		       (uint32_t)buf[len - 2] << 8 | buf[len - 1];
	if (crc != crc32_of(buf, len - 4))
		return -1;
	size_t suffix = bytes_le16(buf + len - 6);
	if (suffix < SUFFIX_TAIL + 8 || suffix > len - 4 - PREFIX_SIZE)
		return -1;
	size_t at = len - 4 - suffix, stop = len - 4 - SUFFIX_TAIL;
	bool have_name = false, have_hash = false;
	while (at + 4 <= stop) {
		uint16_t type = bytes_le16(buf + at), elen = bytes_le16(buf + at + 2);
		if (type == 0 || elen < 4 || elen > stop - at)
			break;
		if (type == EXT_NAME && elen > 4 && elen - 4u <= ASSET_NAME_MAX) {
			memcpy(out->name, buf + at + 4, elen - 4u);
			out->name[elen - 4u] = '\0';
			have_name = true;
		} else if (type == EXT_HASH && elen >= 38 && buf[at + 4] == 0 &&
			   buf[at + 5] == 32) {
			memcpy(out->sha256, buf + at + 6, 32);
			have_hash = true;
		}
		at += elen;
	}
	if (!have_name || !have_hash)
		return -1;
	out->data_offset = PREFIX_SIZE;
	out->data_size = len - 4 - suffix - PREFIX_SIZE;
	return 0;
}
