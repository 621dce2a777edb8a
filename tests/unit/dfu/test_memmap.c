/* DfuSe memory-map strings: every exact string of docs/device/dfuse.md#memory-map-strings, and
 * malformed
 * ones. */
#include "memmap.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define KIB 1024u

static void parse_ok(const char *s, struct dfuse_map *m)
{
	struct error err;
	error_init(&err);
	int r = dfuse_map_parse(s, m, &err);
	if (r < 0)
		fail_msg("parse of '%s' failed: %s", s, err.message);
	error_clear(&err);
}

static void assert_seg(const struct dfuse_map *m, unsigned i, uint32_t start, uint32_t n,
		       uint32_t size, uint8_t attrs)
{
	assert_true(i < m->n_segments);
	assert_int_equal(m->segments[i].start, start);
	assert_int_equal(m->segments[i].n_sectors, n);
	assert_int_equal(m->segments[i].sector_size, size);
	assert_int_equal(m->segments[i].attrs, attrs);
}

#define R DFUSE_MEM_READABLE
#define E DFUSE_MEM_ERASABLE
#define W DFUSE_MEM_WRITABLE

static void test_gen2_internal_flash_has_readonly_bootloader_and_rew_sectors(void **state)
{
	(void)state;
	struct dfuse_map m;
	parse_ok("@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg", &m);
	assert_string_equal(m.name, "Internal Flash");
	assert_int_equal(m.n_segments, 4);
	assert_seg(&m, 0, 0x08000000, 3, 16 * KIB, R);
	assert_seg(&m, 1, 0x0800C000, 1, 16 * KIB, R | E | W);
	assert_seg(&m, 2, 0x08010000, 1, 64 * KIB, R | E | W);
	assert_seg(&m, 3, 0x08020000, 7, 128 * KIB, R | E | W);
	assert_int_equal(dfuse_segment_end(&m.segments[3]), 0x08100000);
	assert_false(dfuse_map_range_has(&m, 0x08000000, 4, W, NULL));
	assert_true(dfuse_map_range_has(&m, 0x08020000, 0x60000, R | E | W, NULL));
}

static void test_gen2_dct_and_p1_serial_flash(void **state)
{
	(void)state;
	struct dfuse_map m;
	parse_ok("@DCT Flash   /0x00000000/01*016Kg", &m);
	assert_string_equal(m.name, "DCT Flash");
	assert_int_equal(m.n_segments, 1);
	assert_seg(&m, 0, 0, 1, 16 * KIB, R | E | W);
	parse_ok("@Serial Flash   /0x00000000/256*004Kg", &m);
	assert_string_equal(m.name, "Serial Flash");
	assert_seg(&m, 0, 0, 256, 4 * KIB, R | E | W);
	assert_int_equal(dfuse_segment_end(&m.segments[0]), 1024 * KIB);
}

static void test_core_maps_parse_with_two_spaces_and_colon_in_name(void **state)
{
	(void)state;
	struct dfuse_map m;
	parse_ok("@Internal Flash  /0x08000000/20*001Ka,108*001Kg", &m);
	assert_string_equal(m.name, "Internal Flash");
	assert_seg(&m, 0, 0x08000000, 20, KIB, R);
	assert_seg(&m, 1, 0x08005000, 108, KIB, R | E | W);
	parse_ok("@SPI Flash : SST25x/0x00000000/512*04Kg", &m);
	assert_string_equal(m.name, "SPI Flash : SST25x");
	assert_seg(&m, 0, 0, 512, 4 * KIB, R | E | W);
}

static void test_gen3_internal_flash_mbr_and_bootloader_top_are_readonly(void **state)
{
	(void)state;
	struct dfuse_map m;
	parse_ok("@Internal Flash   /0x00000000/1*004Ka,47*004Kg,192*004Kg,4*004Kg,4*004Kg,8*004Ka",
		 &m);
	assert_int_equal(m.n_segments, 6);
	assert_seg(&m, 0, 0x0, 1, 4 * KIB, R);
	assert_seg(&m, 1, 0x1000, 47, 4 * KIB, R | E | W);
	assert_seg(&m, 2, 0x30000, 192, 4 * KIB, R | E | W);
	assert_seg(&m, 3, 0xF0000, 4, 4 * KIB, R | E | W);
	assert_seg(&m, 4, 0xF4000, 4, 4 * KIB, R | E | W);
	assert_seg(&m, 5, 0xF8000, 8, 4 * KIB, R);
	assert_int_equal(dfuse_segment_end(&m.segments[5]), 0x100000);
	uint32_t bad;
	assert_false(dfuse_map_range_has(&m, 0xF4000, 0xC000, W, &bad));
	assert_int_equal(bad, 0xF8000);
	assert_true(dfuse_map_range_has(&m, 0x1000, 0xF7000, W, NULL));
}

static void test_gen3_dcd_dct_and_external_flash_maps(void **state)
{
	(void)state;
	struct dfuse_map m;
	parse_ok("@DCD Flash   /0x00000000/1*016Ke", &m);
	assert_string_equal(m.name, "DCD Flash");
	assert_seg(&m, 0, 0, 1, 16 * KIB, R | W);
	parse_ok("@DCT Flash   /0x00000000/1*016Ke", &m);
	assert_string_equal(m.name, "DCT Flash");
	parse_ok("@External Flash   /0x80000000/1024*004Kg", &m);
	assert_seg(&m, 0, 0x80000000, 1024, 4 * KIB, R | E | W);
	parse_ok("@External Flash   /0x80000000/2048*004Kg", &m);
	assert_int_equal(dfuse_segment_end(&m.segments[0]), 0x80800000);
	parse_ok("@External Flash   /0x80000000/1024*008Kg", &m);
	assert_seg(&m, 0, 0x80000000, 1024, 8 * KIB, R | E | W);
}

static void test_p2_internal_flash_is_all_rew(void **state)
{
	(void)state;
	struct dfuse_map m;
	parse_ok("@Internal Flash   /0x08000000/2048*004Kg", &m);
	assert_seg(&m, 0, 0x08000000, 2048, 4 * KIB, R | E | W);
	assert_true(dfuse_map_range_has(&m, 0x085F4000, 0xC000, W, NULL));
}

static void test_protected_map_is_erasable_only(void **state)
{
	(void)state;
	struct dfuse_map m;
	parse_ok("@Internal Flash   /0x00000000/1*004Kb,47*004Kb,192*004Kb,4*004Kb,4*004Kb,8*004Kb",
		 &m);
	assert_int_equal(m.n_segments, 6);
	for (unsigned i = 0; i < m.n_segments; i++)
		assert_int_equal(m.segments[i].attrs, E);
	assert_false(dfuse_map_range_has(&m, 0xB4000, 16, R, NULL));
	assert_false(dfuse_map_range_has(&m, 0xB4000, 16, W, NULL));
}

static void test_every_letter_maps_to_the_table(void **state)
{
	(void)state;
	static const uint8_t expect[7] = {R, E, R | E, W, R | W, E | W, R | E | W};
	char s[64];
	struct dfuse_map m;
	for (int i = 0; i < 7; i++) {
		snprintf(s, sizeof(s), "@X/0x0/1*4K%c", 'a' + i);
		parse_ok(s, &m);
		assert_int_equal(m.segments[0].attrs, expect[i]);
	}
}

static void test_multiple_address_groups_and_byte_and_mega_units(void **state)
{
	(void)state;
	struct dfuse_map m;
	parse_ok("@Mixed/0x08000000/2*512Ba,1*1Mg/0x20000000/4*100 e", &m);
	assert_int_equal(m.n_segments, 3);
	assert_seg(&m, 0, 0x08000000, 2, 512, R);
	assert_seg(&m, 1, 0x08000400, 1, 1024 * KIB, R | E | W);
	assert_seg(&m, 2, 0x20000000, 4, 100, R | W);
	assert_null(dfuse_map_find(&m, 0x10000000));
	assert_ptr_equal(dfuse_map_find(&m, 0x2000018f), &m.segments[2]);
	assert_null(dfuse_map_find(&m, 0x20000190));
}

static void expect_malformed(const char *s)
{
	struct dfuse_map m;
	struct error err;
	error_init(&err);
	if (dfuse_map_parse(s, &m, &err) == 0)
		fail_msg("'%s' was accepted", s);
	assert_int_equal(err.code, ERR_DFU_DESCRIPTOR_INVALID);
	assert_non_null(json_object_get(err.detail, "reason"));
	assert_non_null(json_object_get(err.detail, "offset"));
	error_clear(&err);
}

static void test_malformed_maps_are_refused_with_reason_and_offset(void **state)
{
	(void)state;
	expect_malformed("");
	expect_malformed("Internal Flash   /0x08000000/03*016Ka"); /* no @ */
	expect_malformed("@Internal Flash");			   /* no address */
	expect_malformed("@   /0x0/1*4Kg");			   /* empty name */
	expect_malformed("@X/08000000/1*4Kg");			   /* no 0x */
	expect_malformed("@X/0x/1*4Kg");			   /* no hex digits */
	expect_malformed("@X/0x100000000/1*4Kg");		   /* > 32 bits */
	expect_malformed("@X/0x0");				   /* no segments */
	expect_malformed("@X/0x0/");				   /* empty segment list */
	expect_malformed("@X/0x0/1*4Kz");			   /* bad letter */
	expect_malformed("@X/0x0/1*4KG");			   /* upper-case letter */
	expect_malformed("@X/0x0/1*4K");			   /* no letter */
	expect_malformed("@X/0x0/0*4Kg");			   /* zero count */
	expect_malformed("@X/0x0/1*0Kg");			   /* zero size */
	expect_malformed("@X/0x0/14Kg");			   /* no '*' */
	expect_malformed("@X/0x0/1*4Kg,");			   /* trailing comma */
	expect_malformed("@X/0x0/1*4Kg junk");			   /* trailing junk */
	expect_malformed("@X/0xFFFFF000/2*4Kg");		   /* runs past 4 GiB */
	expect_malformed("@X/0x0/99999999999*4Kg");		   /* count overflow */
	expect_malformed("@X/0x0/1*99999999999Kg");		   /* size overflow */
	expect_malformed("@X/0x0/1*4194304Kg");			   /* 4 GiB sector */
}

static void test_map_at_the_limits(void **state)
{
	(void)state;
	char s[DFUSE_MAP_STRING_MAX + 2];
	struct dfuse_map m;
	struct error err;
	error_init(&err);
	/* Exactly DFUSE_MAP_MAX_SEGMENTS segments parse; one more does not. */
	size_t len = (size_t)snprintf(s, sizeof(s), "@X/0x0/1*1Kg");
	for (int i = 1; i < DFUSE_MAP_MAX_SEGMENTS; i++)
		len += (size_t)snprintf(s + len, sizeof(s) - len, ",1*1Kg");
	parse_ok(s, &m);
	assert_int_equal(m.n_segments, DFUSE_MAP_MAX_SEGMENTS);
	snprintf(s + len, sizeof(s) - len, ",1*1Kg");
	assert_int_equal(dfuse_map_parse(s, &m, &err), -1);
	error_clear(&err);
	/* A string longer than DFUSE_MAP_STRING_MAX is refused. */
	memset(s, ' ', sizeof(s) - 1);
	s[0] = '@';
	s[sizeof(s) - 1] = '\0';
	assert_int_equal(dfuse_map_parse(s, &m, &err), -1);
	error_clear(&err);
	/* A name of DFUSE_MAP_NAME_MAX characters is refused, one less is kept. */
	memset(s, 'n', sizeof(s));
	s[0] = '@';
	strcpy(s + DFUSE_MAP_NAME_MAX, "/0x0/1*1Kg");
	parse_ok(s, &m);
	assert_int_equal(strlen(m.name), DFUSE_MAP_NAME_MAX - 1);
	s[0] = 'n';
	memmove(s + 1, s, strlen(s) + 1);
	s[0] = '@';
	assert_int_equal(dfuse_map_parse(s, &m, &err), -1);
	error_clear(&err);
	/* Sector count limit. */
	snprintf(s, sizeof(s), "@X/0x0/%u*1Bg", DFUSE_MAP_MAX_SECTORS);
	parse_ok(s, &m);
	snprintf(s, sizeof(s), "@X/0x0/%u*1Bg", DFUSE_MAP_MAX_SECTORS + 1);
	assert_int_equal(dfuse_map_parse(s, &m, &err), -1);
	error_clear(&err);
}

static void test_gen2_erase_covers_whole_sectors_once(void **state)
{
	(void)state;
	struct dfuse_map m;
	struct dfuse_erase_unit u[16];
	struct error err;
	error_init(&err);
	parse_ok("@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg", &m);
	/* A 2.4 KB Photon user part at 0x080A0000 erases the one 128 KiB sector. */
	int n = dfuse_map_erase_units(&m, 0x080A0000, 2460, u, 16, &err);
	assert_int_equal(n, 1);
	assert_int_equal(u[0].address, 0x080A0000);
	assert_int_equal(u[0].size, 128 * KIB);
	/* A system part spanning a sector boundary: two sectors. */
	n = dfuse_map_erase_units(&m, 0x08020000, 0x20001, u, 16, &err);
	assert_int_equal(n, 2);
	assert_int_equal(u[1].address, 0x08040000);
	/* Range crossing from the 16 KiB into the 64 KiB sector. */
	n = dfuse_map_erase_units(&m, 0x0800F000, 0x2000, u, 16, &err);
	assert_int_equal(n, 2);
	assert_int_equal(u[0].address, 0x0800C000);
	assert_int_equal(u[1].address, 0x08010000);
	/* The bootloader sectors are not erasable. */
	assert_int_equal(dfuse_map_erase_units(&m, 0x08000000, 16, u, 16, &err), -1);
	assert_int_equal(err.code, ERR_OUTSIDE_MEMORY_MAP);
	error_clear(&err);
}

static void test_gen3_erase_is_exact_pages(void **state)
{
	(void)state;
	struct dfuse_map m;
	struct dfuse_erase_unit u[64];
	struct error err;
	error_init(&err);
	parse_ok("@Internal Flash   /0x00000000/1*004Ka,47*004Kg,192*004Kg,4*004Kg,4*004Kg,8*004Ka",
		 &m);
	/* 11972-byte Argon tinker at 0xD4000: pages 0xD4000, 0xD5000, 0xD6000. */
	int n = dfuse_map_erase_units(&m, 0xD4000, 11972, u, 64, &err);
	assert_int_equal(n, 3);
	assert_int_equal(u[2].address, 0xD6000);
	/* Not page aligned start, crossing a segment boundary at 0x30000. */
	n = dfuse_map_erase_units(&m, 0x2FF80, 0x100, u, 64, &err);
	assert_int_equal(n, 2);
	assert_int_equal(u[0].address, 0x2F000);
	assert_int_equal(u[1].address, 0x30000);
	/* List too small is an error, not a silent truncation. */
	assert_int_equal(dfuse_map_erase_units(&m, 0x30000, 0x10000, u, 4, &err), -1);
	error_clear(&err);
	/* The read-only top of the bootloader. */
	assert_int_equal(dfuse_map_erase_units(&m, 0xF7000, 0x2000, u, 64, &err), -1);
	assert_int_equal(json_integer_value(json_object_get(err.detail, "address")), 0xF8000);
	error_clear(&err);
}

/* Found by fuzz_memmap: a range running past 4 GiB wrapped to 0x0, so the
 * erase units included the sectors at address 0 (the MBR / bootloader). */
static void test_range_past_the_top_of_the_address_space_never_wraps(void **state)
{
	(void)state;
	struct dfuse_map m;
	struct error err;
	error_init(&err);
	assert_int_equal(
	    dfuse_map_parse("@Wrap   /0x00000000/4*004Kg/0xFFFFC000/4*004Kg", &m, &err), 0);
	struct dfuse_erase_unit u[16];
	assert_int_equal(dfuse_map_erase_units(&m, 0xffffe000, 0x4000, u, 16, &err), -1);
	assert_int_equal(err.code, ERR_OUTSIDE_MEMORY_MAP);
	error_clear(&err);
	uint32_t bad = 1;
	assert_false(dfuse_map_range_has(&m, 0xffffe000, 0x4000, DFUSE_MEM_WRITABLE, &bad));
	assert_int_equal(bad, 0);
	/* up to the last byte is fine */
	assert_true(dfuse_map_range_has(&m, 0xffffe000, 0x2000, DFUSE_MEM_WRITABLE, &bad));
	assert_int_equal(dfuse_map_erase_units(&m, 0xffffe000, 0x2000, u, 16, &err), 2);
	assert_int_equal(u[1].address, 0xfffff000);
}

/* Found by fuzz_memmap: overlapping segments gave overlapping erase units
 * (0x3000 and 0x30fc, each 4 KiB). */
static void test_overlapping_segments_are_refused(void **state)
{
	(void)state;
	struct dfuse_map m;
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_map_parse("@Wr  /0x00000000/4*004Kg/0xFC/4*004Kg", &m, &err), -1);
	assert_int_equal(err.code, ERR_DFU_DESCRIPTOR_INVALID);
	assert_string_equal(json_string_value(json_object_get(err.detail, "reason")),
			    "segments overlap");
	error_clear(&err);
	/* adjacent groups, in either order, are fine */
	assert_int_equal(dfuse_map_parse("@A  /0x00004000/4*004Kg/0x0/4*004Ka", &m, &err), 0);
	assert_int_equal(m.n_segments, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_gen2_internal_flash_has_readonly_bootloader_and_rew_sectors),
	    cmocka_unit_test(test_gen2_dct_and_p1_serial_flash),
	    cmocka_unit_test(test_core_maps_parse_with_two_spaces_and_colon_in_name),
	    cmocka_unit_test(test_gen3_internal_flash_mbr_and_bootloader_top_are_readonly),
	    cmocka_unit_test(test_gen3_dcd_dct_and_external_flash_maps),
	    cmocka_unit_test(test_p2_internal_flash_is_all_rew),
	    cmocka_unit_test(test_protected_map_is_erasable_only),
	    cmocka_unit_test(test_every_letter_maps_to_the_table),
	    cmocka_unit_test(test_multiple_address_groups_and_byte_and_mega_units),
	    cmocka_unit_test(test_malformed_maps_are_refused_with_reason_and_offset),
	    cmocka_unit_test(test_map_at_the_limits),
	    cmocka_unit_test(test_gen2_erase_covers_whole_sectors_once),
	    cmocka_unit_test(test_gen3_erase_is_exact_pages),
	    cmocka_unit_test(test_range_past_the_top_of_the_address_space_never_wraps),
	    cmocka_unit_test(test_overlapping_segments_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
