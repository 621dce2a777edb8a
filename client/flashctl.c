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

struct verb {
	const char *name;
	int (*run)(int argc, char **argv, const struct cli_global *g);
	const char *synopsis;
};

static const struct verb verbs[] = {
    {"inspect", cmd_inspect,
     "inspect FILE... [--json]      describe firmware files (no daemon needed)"},
    {"list", cmd_list, "list                          the devices flashd sees"},
    {"watch", cmd_watch, "watch                         devices and jobs as they change"},
    {"jobs", cmd_jobs, "jobs                          current and recent jobs"},
    {"cancel", cmd_cancel, "cancel JOB                    stop a job"},
    {"flash", cmd_flash,
     "flash FILE... [--device ID | --port TTY | --usb PORTPATH | --platform NAME [--all]]\n"
     "        [--wait[=S]] [--force] [--verify] [--dry-run] [--detach]"},
    {"check", cmd_check,
     "check FILE... [--device ID | --port TTY | --usb PORTPATH | --platform NAME [--all]]\n"
     "        [--wait[=S]] [--force]      would this flash? (preflight only, nothing is written)"},
    {"info", cmd_info, "info [DEVICE]                 everything known about a device"},
    {"history", cmd_history,
     "history [--device ID] [--since TIME] [--result R] [--limit N] [--json]\n"
     "        [--stats]                   past jobs (the daemon's flash history)"},
    {"fleet", cmd_fleet,
     "fleet --broker URL [--prefix P] [--json] [--once] [--timeout S]\n"
     "        [--ca-file F] [--cert-file F --key-file F] [--password-file F]\n"
     "                                    all stations publishing to an MQTT broker"},
    {"errors", cmd_errors, "errors [--json|--markdown]    print the error catalogue"},
};

static void usage(FILE *out)
{
	fprintf(out, "Usage: flashctl [--socket PATH] [--json] VERB [ARGS...]\n\nVerbs:\n");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		fprintf(out, "  %s\n", verbs[i].synopsis);
	fprintf(out, "\nExit statuses come from the error catalogue: 'flashctl errors'.\n");
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
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strcmp(verbs[i].name, name) == 0) {
			int vargc = argc - optind;
			char **vargv = argv + optind;
			/* The verb parses its own options with argv[0] = the verb's name;
			 * optind = 0 makes glibc's getopt start afresh. */
			optind = 0;
			return verbs[i].run(vargc, vargv, &g);
		}
	}
	char msg[256];
	snprintf(msg, sizeof(msg), "unknown verb '%s' (see flashctl --help)", name);
	return render_usage_error(&g, msg);
}
