/*
 * Asset modules: how an asset of a bundle travels to the device.  Device OS
 * 5.5.0+ takes an asset through the same firmware-update path as any module
 * (hal/src/<mcu>/ota_flash_hal.cpp HAL_FLASH_End(): a module of function
 * MODULE_FUNCTION_ASSET goes to AssetManager::storeAsset(), which keeps it in
 * the asset file system under its name).  The module is the one
 * binary-version-reader's createAssetModule() makes (lib/moduleEncoding.js):
 *
 *   module_info_t  start 0, end = size - 4, flags DROP_MODULE_INFO,
 *                  function 9 (asset), platform 0, no dependencies
 *   the asset's raw bytes
 *   suffix: HASH extension (SHA-256 of the raw bytes), NAME extension,
 *           PRODUCT_DATA extension (0xffff), then the fixed 36-byte tail
 *           (reserved, SHA-256 of the module so far, suffix size)
 *   CRC-32 (big-endian) of everything before it
 *
 * Device OS's AssetReader::validate() (system/src/asset_manager.cpp) checks
 * exactly these: function asset, DROP_MODULE_INFO set, no prefix extensions,
 * size = end - start + 4, the CRC, and a suffix holding NAME and HASH.
 * flashd writes them uncompressed (Particle's tools deflate them; Device OS
 * takes both).
 */
#pragma once

#include "errors.h"

#include <stddef.h>
#include <stdint.h>

#define ASSET_NAME_MAX	      64u /* bytes; the asset file system's name limit in flashd */
#define ASSET_MODULE_MAX      (8u * 1024 * 1024) /* larger than any platform's asset store */
#define ASSET_MODULE_OVERHEAD (24u + 38u + 4u + 10u + 36u + 4u) /* + name length */

/*
 * The asset module for (name, data): malloc'd into *ret (*ret_len bytes).
 * Fails with bundle-asset-mismatch for an empty or too long name (the
 * device's file system limit) or a module larger than ASSET_MODULE_MAX.
 */
int asset_module_build(const char *name, const uint8_t *data, size_t size, uint8_t **ret,
		       size_t *ret_len, struct error *err);

/* What an asset module says of itself (the suffix's NAME and HASH), for
 * modules asset_module_build() made or that a device holds: 0, or -1 when
 * it is not an asset module of that layout. */
struct asset_module_info {
	char name[ASSET_NAME_MAX + 1];
	uint8_t sha256[32]; /* of the raw asset bytes */
	size_t data_offset, data_size;
};
int asset_module_read(const uint8_t *buf, size_t len, struct asset_module_info *out);
