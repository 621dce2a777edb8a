/* Placeholder: flashctl inspect lands with issue 2 (being written). */
#include "render.h"
#include "verbs.h"

int cmd_inspect(int argc, char **argv, const struct cli_global *g)
{
	(void)argc;
	(void)argv;
	return render_usage_error(g, "inspect is not built yet");
}
