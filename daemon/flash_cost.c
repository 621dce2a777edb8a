/*
 * Datasheet figures for writing flash (flash_cost.h), typical values:
 *  - STM32F205 (Gen 2: Photon, P1, Electron): ST DS6329 "STM32F205xx STM32F207xx"
 *    rev 18, table "Flash memory programming" (2.7-3.6 V, x32 parallelism):
 *    tERASE16KB 250 ms, tERASE64KB 550 ms, tERASE128KB 1 s, tPROG 16 us per
 *    32-bit word;
 *  - nRF52840 (Gen 3 internal flash): Nordic nRF52840 Product Specification v1.7,
 *    section 4.3.9 "NVMC electrical specification": tERASEPAGE 85 ms per 4 KiB
 *    page, tWRITE 41 us per 32-bit word;
 *  - SPI NOR (Gen 3 external QSPI flash, the P2's XIP flash; the RTL8721D
 *    datasheet leaves the figures to the flash part): Winbond W25Q32JV/W25Q64JV
 *    rev. I, "AC electrical characteristics": tSE 45 ms per 4 KiB sector, tPP
 *    0.4 ms per 256-byte page.
 */
#include "flash_cost.h"

#define STM32F2_ERASE_16K_US  250000u
#define STM32F2_ERASE_64K_US  550000u
#define STM32F2_ERASE_128K_US 1000000u
#define STM32F2_PROG_WORD_US  16u
#define NRF52_ERASE_PAGE_US   85000u
#define NRF52_PROG_WORD_US    41u
#define SPI_NOR_ERASE_4K_US   45000u
#define SPI_NOR_PROG_256_US   400u

enum flash_kind flash_kind_of(const struct platform *p, bool staged)
{
	if (!p)
		return FLASH_NRF52; /* the slowest per KiB */
	switch (p->mcu) {
	case MCU_NRF52840:
		return staged ? FLASH_SPI_NOR : FLASH_NRF52;
	case MCU_RTL8721D:
		return FLASH_SPI_NOR;
	default:
		return FLASH_STM32F2;
	}
}

unsigned flash_erase_us(enum flash_kind k, uint32_t size)
{
	unsigned pages = size > 4096 ? size / 4096 : 1;
	switch (k) {
	case FLASH_NRF52:
		return NRF52_ERASE_PAGE_US * pages;
	case FLASH_SPI_NOR:
		return SPI_NOR_ERASE_4K_US * pages;
	default:
		if (size <= 16384)
			return STM32F2_ERASE_16K_US;
		if (size <= 65536)
			return STM32F2_ERASE_64K_US;
		return STM32F2_ERASE_128K_US;
	}
}

unsigned flash_program_us(enum flash_kind k, uint32_t len)
{
	switch (k) {
	case FLASH_NRF52:
		return NRF52_PROG_WORD_US * ((len + 3) / 4);
	case FLASH_SPI_NOR:
		return SPI_NOR_PROG_256_US * ((len + 255) / 256);
	default:
		return STM32F2_PROG_WORD_US * ((len + 3) / 4);
	}
}
