/* Placeholder: the parser lands with issue 2 (being written). */
#include "image.h"

#include <stdlib.h>

int image_parse(const uint8_t *buf, size_t len, struct image **ret, struct error *err)
{
	(void)buf;
	(void)len;
	*ret = NULL;
	return error_set(err, ERR_IMAGE_UNSUPPORTED, "image parser not built yet");
}

void image_free(struct image *img)
{
	free(img);
}
