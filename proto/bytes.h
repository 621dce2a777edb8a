/*
 * Little-endian integers in byte buffers.  Particle's module prefixes and
 * suffixes, DFU status replies, control-request headers and zip records are
 * all little-endian whatever the host: read and write them byte by byte.
 */
#pragma once

#include <stdint.h>

static inline uint16_t bytes_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t bytes_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void bytes_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void bytes_put_le32(uint8_t *p, uint32_t v)
{
	bytes_put_le16(p, (uint16_t)v);
	bytes_put_le16(p + 2, (uint16_t)(v >> 16));
}
