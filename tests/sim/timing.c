/*
 * Datasheet work durations (typical values): the simulator's own model.  The
 * daemon's estimates take their flash figures from the same sources
 * (daemon/flash_cost.c).  Sources:
 *
 * STM32F205 (Gen 2: Photon, P1, Electron) - ST DS6329 "STM32F205xx
 *   STM32F207xx" Rev 18, table "Flash memory programming" (VDD 2.7-3.6 V,
 *   x32 parallelism): tERASE16KB 250 ms, tERASE64KB 550 ms,
 *   tERASE128KB 1 s (typ), tPROG 16 us per 32-bit word.
 * nRF52840 (Gen 3 internal flash) - Nordic nRF52840 Product Specification
 *   v1.7, section 4.3.9 "NVMC electrical specification": tERASEPAGE 85 ms
 *   (max), tWRITE 41 us per 32-bit word (max).
 * RTL8721D (P2 family; XIP SPI NOR flash) and the Gen 3 external QSPI flash
 *   (4/8 MiB NOR) - no erase figures in the RTL8721D datasheet, which leaves
 *   them to the SPI flash part; Winbond W25Q32JV/W25Q64JV datasheet rev. I,
 *   "AC electrical characteristics": tSE (4 KiB sector erase) 45 ms typ,
 *   tPP (256-byte page program) 0.4 ms typ.
 * USB full speed (CDC data of the serial console): USB 2.0 specification,
 *   section 5.8.4 "Bulk Transfer Bandwidth Requirements", table 5-9: at most
 *   19 bulk transactions of a 64-byte max packet per 1 ms frame, i.e. 1216
 *   bytes per ms on an otherwise idle bus.
 * YMODEM receiver work (what a listening-mode device does per block; Device
 *   OS system/src/system_ymodem.cpp receive_file() calls the flash code
 *   between reading a block and replying): the header block erases the
 *   receiving region over the declared size (HAL_FLASH_Begin -> FLASH_Begin
 *   -> FLASH_EraseMemory: whole 128 KiB sectors on Gen 2, platform/MCU/
 *   STM32F2xx/SPARK_Firmware_Driver/src/flash_mal.c; 4 KiB external-flash
 *   sectors on Gen 3, platform/MCU/nRF52840/src/flash_mal.c), every data
 *   block is programmed as it arrives (HAL_FLASH_Update -> FLASH_Update: one
 *   word program per 32 bits on Gen 2, external page programs on Gen 3).
 *   The costs are the erase and program figures above; the P2 is taken to
 *   do the same on its SPI NOR (its OTA code is not public in that form).
 * DFU UPLOAD (device -> host over the control endpoint): the bus time of the
 *   transfer.  Its data stage is a run of 64-byte IN packets on the full-speed
 *   control endpoint (USB 2.0 section 5.5.3: 64 bytes is the largest full-speed
 *   control packet), each the same transaction as a bulk IN packet, so it is
 *   charged at the table 5-9 rate above (19 per 1 ms frame), plus one packet's
 *   time each for the setup and the status stage.  Reading the flash itself is
 *   not charged: internal flash is memory-mapped (STM32F205: DS6329 "Embedded
 *   Flash memory", 128-bit wide reads at up to 120 MHz; nRF52840 PS v1.7 section
 *   4.3 "NVMC": code-memory reads at CPU speed) and the P2's SPI NOR is read
 *   through its XIP cache (W25Q64JV rev. I: Fast Read Quad I/O at up to 133 MHz,
 *   66 MB/s), all fifty times faster than the bus.
 * Reset/enumeration: DFU leave -> reset is a 500-count timer
 * (docs/device/dfuse.md#requests-and-states,
 *   ~500 ms on nRF52/STM32; RTL872x counts main-loop passes, UNVERIFIED);
 *   boot to USB enumeration is not in any datasheet - 300 ms for the
 *   bootloader and 1 s for Device OS are our assumption (docs/device/README.md#what-is-unverified).
 */
#include "timing.h"

#include <math.h>

#define STM32F2_ERASE_16K_US  250000u
#define STM32F2_ERASE_64K_US  550000u
#define STM32F2_ERASE_128K_US 1000000u
#define STM32F2_PROG_WORD_US  16u
#define NRF52_ERASE_PAGE_US   85000u
#define NRF52_PROG_WORD_US    41u
#define SPI_NOR_ERASE_4K_US   45000u
#define SPI_NOR_PROG_256_US   400u
#define USB_FS_BULK_PACKET    64u
#define USB_FS_BULK_PER_FRAME 19u
#define USB_FS_FRAME_US	      1000u
#define DFU_LEAVE_RESET_US    500000u
#define BOOT_TO_BOOTLOADER_US 300000u
#define BOOT_TO_DEVICE_OS_US  1000000u

unsigned timing_erase_us(const struct platform *p, bool external, uint32_t sector_size)
{
	if (external || p->mcu == MCU_RTL8721D)
		return SPI_NOR_ERASE_4K_US * (sector_size > 4096 ? sector_size / 4096 : 1);
	if (p->mcu == MCU_NRF52840)
		return NRF52_ERASE_PAGE_US;
	if (sector_size <= 16384)
		return STM32F2_ERASE_16K_US;
	if (sector_size <= 65536)
		return STM32F2_ERASE_64K_US;
	return STM32F2_ERASE_128K_US;
}

unsigned timing_program_us(const struct platform *p, bool external, size_t len)
{
	if (external || p->mcu == MCU_RTL8721D)
		return (unsigned)((len + 255) / 256 * SPI_NOR_PROG_256_US);
	if (p->mcu == MCU_NRF52840)
		return (unsigned)((len + 3) / 4 * NRF52_PROG_WORD_US);
	return (unsigned)((len + 3) / 4 * STM32F2_PROG_WORD_US);
}

unsigned timing_usb_bulk_us(size_t len)
{
	size_t packets = (len + USB_FS_BULK_PACKET - 1) / USB_FS_BULK_PACKET;
	return (unsigned)((packets * USB_FS_FRAME_US + USB_FS_BULK_PER_FRAME - 1) /
			  USB_FS_BULK_PER_FRAME);
}

unsigned timing_dfu_upload_us(const struct platform *p, size_t len)
{
	(void)p;
	size_t packets = (len + USB_FS_BULK_PACKET - 1) / USB_FS_BULK_PACKET + 2;
	return (unsigned)((packets * USB_FS_FRAME_US + USB_FS_BULK_PER_FRAME - 1) /
			  USB_FS_BULK_PER_FRAME);
}

unsigned timing_dfu_leave_reset_us(const struct platform *p)
{
	(void)p;
	return DFU_LEAVE_RESET_US;
}

unsigned timing_boot_us(const struct platform *p, bool into_dfu)
{
	(void)p;
	return into_dfu ? BOOT_TO_BOOTLOADER_US : BOOT_TO_DEVICE_OS_US;
}

unsigned timing_scale_ms(double scale, unsigned us)
{
	if (scale <= 0)
		return 0;
	return (unsigned)ceil(scale * us / 1000.0);
}
