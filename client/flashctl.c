/* flashctl: the client.  Parses global options and dispatches to one verb. */
#include "config.h"
#include "errors.h"
#include "render.h"
#include "verbs.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Every verb, in the order --help lists them.  Adding a verb = one file
 * client/cmd_NAME.c that defines `const struct cmd_entry cmd_NAME_entry` (name,
 * options, usage, summary, handler; see verbs.h), its extern in verbs.h, the
 * file in client/meson.build, and one line here.  Document it in flashctl.1
 * and the bash completion (tests/integration/client/test_docs.py checks both).
 */
static const struct cmd_entry *const cmd_table[] = {
    &cmd_inspect_entry, &cmd_list_entry,  &cmd_watch_entry,  &cmd_jobs_entry,	 &cmd_cancel_entry,
    &cmd_flash_entry,	&cmd_check_entry, &cmd_info_entry,   &cmd_history_entry, &cmd_auto_entry,
    &cmd_station_entry, &cmd_fleet_entry, &cmd_errors_entry,
};

#define SUMMARY_COLUMN 32 /* where --help starts a verb's summary */

/* Prints "  VERB USAGE", continuation lines of USAGE indented; returns the
 * column where its last line ends. */
static int print_synopsis(FILE *out, const struct cmd_entry *e)
{
	int col = fprintf(out, "  %s%s", e->name, *e->usage ? " " : "");
	for (const char *u = e->usage; *u;) {
		size_t n = strcspn(u, "\n");
		col += fprintf(out, "%.*s", (int)n, u);
		u += n;
		if (*u == '\n') {
			u++;
			col = fprintf(out, "\n          ") - 1;
		}
	}
	return col;
}

static void usage(FILE *out)
{
	fprintf(out, "Usage: flashctl [--socket PATH] [--json] VERB [ARGS...]\n\nVerbs:\n");
	for (size_t i = 0; i < sizeof(cmd_table) / sizeof(cmd_table[0]); i++) {
		int col = print_synopsis(out, cmd_table[i]);
		if (col >= SUMMARY_COLUMN) { /* the summary on a line of its own */
			fputc('\n', out);
			col = 0;
		}
		fprintf(out, "%*s%s\n", SUMMARY_COLUMN - col, "", cmd_table[i]->summary);
	}
	fprintf(out, "\nExit statuses come from the error catalogue: 'flashctl errors'.\n");
}

int cmd_usage_error(const struct cli_global *g, const struct cmd_entry *e)
{
	char msg[512];
	int n = snprintf(msg, sizeof(msg), "usage: flashctl %s%s%s", e->name, *e->usage ? " " : "",
			 e->usage);
	if (n < 0)
		return render_usage_error(g, "usage: see flashctl --help");
	/* The usage is wrapped for --help; an error message is one line. */
	for (char *nl = strchr(msg, '\n'); nl; nl = strchr(nl, '\n'))
		*nl = ' ';
	return render_usage_error(g, msg);
}

int main(int argc, char **argv)
{
	struct cli_global g = {0};
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0},
	};
	int c;

	g.is_tty = isatty(STDOUT_FILENO);
	g.no_color = !g.is_tty || getenv("NO_COLOR") != NULL;
	/* '+': stop at the verb so that each verb parses its own options. */
	while ((c = getopt_long(argc, argv, "+s:jhV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			g.socket_path = optarg;
			break;
		case 'j':
			g.json = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("flashctl %s\n", FLASHD_VERSION);
			return 0;
		default:
			return render_usage_error(&g, "unknown option (see flashctl --help)");
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return render_usage_error(&g, "no verb given");
	}
	const char *name = argv[optind];
	for (size_t i = 0; i < sizeof(cmd_table) / sizeof(cmd_table[0]); i++) {
		if (strcmp(cmd_table[i]->name, name) == 0) {
			int vargc = argc - optind;
			char **vargv = argv + optind;
			/* The verb parses its own options with argv[0] = the verb's name;
			 * optind = 0 makes glibc's getopt start afresh. */
			optind = 0;
			return cmd_table[i]->exec(vargc, vargv, &g);
		}
	}
	char msg[256];
	snprintf(msg, sizeof(msg), "unknown verb '%s' (see flashctl --help)", name);
	return render_usage_error(&g, msg);
}
