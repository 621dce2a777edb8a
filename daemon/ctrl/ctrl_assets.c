#include "ctrl_assets.h"

#include "asset_module.h"

#include <stdio.h>
#include <string.h>

void ctrl_assets_take(struct device_facts *facts, const struct ctrl_result *res)
{
	facts->n_assets = 0;
	for (unsigned i = 0; i < res->n_assets && i < DEVICE_FACTS_MAX_ASSETS; i++)
		facts->assets[facts->n_assets++] = res->assets[i];
	facts->assets_known = true;
}

bool ctrl_assets_optional(enum ctrl_op op, struct error *err)
{
	if (op != CTRL_OP_ASSET_INFO || err->code == ERR_DEVICE_GONE || err->code == ERR_CANCELLED)
		return false;
	error_clear(err);
	return true;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

int ctrl_assets_verdict(struct job *job, const struct device_facts *now, struct error *err)
{
	if (!now->assets_known) {
		unsigned n = 0;
		for (size_t i = 0; i < job_image_count(job); i++) {
			const struct image *img = job_image(job, i);
			n += img && img->n_modules == 1 &&
			     img->modules[0].function == MODULE_FUNCTION_ASSET;
		}
		if (n)
			job_note(job, "assets-not-verified",
				 "the device (Device OS %s) does not report its asset store "
				 "(control request 91 came with 5.6.0): %u asset%s written, not "
				 "checked",
				 now->os_version[0] ? now->os_version : "unknown", n,
				 n == 1 ? "" : "s");
		return 0;
	}
	for (size_t i = 0; i < job_image_count(job); i++) {
		const struct image *img = job_image(job, i);
		struct asset_module_info a;
		if (!img || img->n_modules != 1 ||
		    img->modules[0].function != MODULE_FUNCTION_ASSET ||
		    asset_module_read(img->data, img->len, &a) < 0)
			continue;
		bool found = false, same = false;
		for (unsigned k = 0; k < now->n_assets && !same; k++)
			if (strcmp(now->assets[k].name, a.name) == 0) {
				found = true;
				same = memcmp(now->assets[k].sha256, a.sha256, 32) == 0;
			}
		if (same)
			continue;
		char sha[65];
		hex(a.sha256, 32, sha);
		error_set(err, ERR_ASSET_NOT_STORED,
			  "after the update the device %s the asset %s%s",
			  found ? "holds" : "lacks", a.name,
			  found ? " with another SHA-256" : " in its asset store");
		error_detail_str(err, "asset", a.name);
		error_detail_str(err, "sha256", sha);
		error_detail_str(err, "file", job_image_name(job, i));
		error_detail_str(err, "reason", found ? "hash differs" : "missing");
		return -1;
	}
	return 0;
}
