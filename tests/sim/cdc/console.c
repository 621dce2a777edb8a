/*
 * The listening-mode console (docs/device/console.md; Device OS
 * system/src/system_setup.cpp: SystemSetupConsole::handle,
 * WiFiSetupConsole::handle, read_line, read_multiline; serialReadLine in
 * wiring/src/spark_wiring_stream.cpp).
 *
 * Command keys are not echoed; unknown bytes are ignored.  Line input echoes
 * what it keeps, answers BS/DEL by echoing the same byte, ends on CR, LF or
 * the first byte after max_len characters (that byte is consumed, not
 * echoed), then prints "\r\n" and flushes what is still buffered.
 */
#include "listening_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Which keys a console of this era knows (docs/device/console.md#commands; v0.5.0 added `L`, v0.6.x
 * `c`/`C`, `d` is in 1.5.2 — treated as part of the whole 0.6.1-1.5.x era). */
static bool key_known(const struct listening *l, char c)
{
	switch (c) {
	case 'i':
	case 'm':
	case 'f':
	case 'x':
	case 's':
	case 'v':
	case 'L':
		return true;
	case 'c':
	case 'C':
	case 'd':
		return l->cfg.era != LISTENING_ERA_0_4;
	case 'w':
		return l->cfg.wifi;
	default:
		return false;
	}
}

/* Gen 2 Photon/P1 builds have Wiring_WpaEnterprise (spark_wiring_platform.h). */
static bool wifi_enterprise(const struct listening *l)
{
	return (l->cfg.platform_id == 6 || l->cfg.platform_id == 8) &&
	       l->cfg.era != LISTENING_ERA_0_4;
}

/* ---- deterministic modem identity for the cellular `i` form
 * (docs/device/console.md#device-id-reply) ------ */

static unsigned id_hash(const struct listening *l, unsigned salt)
{
	unsigned h = 2166136261u ^ salt;
	for (const char *p = l->device_id; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h;
}

static const char *cell_radio_version(const struct listening *l)
{
	switch (l->cfg.platform_id) {
	case 10:
		return "23.60"; /* Electron: u-blox SARA */
	case 13:
	case 23:
		return "L0.0.00.00.05.12"; /* Boron, B-SoM: u-blox SARA-R4/R5 */
	default:
		return "EG91NAXGAR07A07M1G_01.001.01.001"; /* Quectel (B5-SoM, Tracker, M-SoM) */
	}
}

static void cmd_i(struct listening *l)
{
	if (!l->cfg.cellular) {
		listening_printf(l, "Your device id is %s\r\n", l->device_id);
		return;
	}
	char imei[16], iccid[21];
	snprintf(imei, sizeof(imei), "3527530%08u", id_hash(l, 1) % 100000000u);
	snprintf(iccid, sizeof(iccid), "89014103%06u%06u", id_hash(l, 2) % 1000000u,
		 id_hash(l, 3) % 1000000u);
	listening_printf(l, "Device ID: %s\r\nIMEI: %s\r\nICCID: %s\r\n", l->device_id, imei,
			 iccid);
	/* "cellfw" joined the key/value list in 2.0 (hal/src/<platform>/ota_flash_hal.cpp). */
	if (l->cfg.era >= LISTENING_ERA_2)
		listening_printf(l, "Cell Radio Version: %s\r\n", cell_radio_version(l));
}

static void cmd_m(struct listening *l)
{
	unsigned b[6] = {0};
	if (l->mac)
		sscanf(l->mac, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]);
	listening_printf(l, "Your device MAC address is\r\n%02x:%02x:%02x:%02x:%02x:%02x\r\n",
			 b[0] & 0xff, b[1] & 0xff, b[2] & 0xff, b[3] & 0xff, b[4] & 0xff,
			 b[5] & 0xff);
}

static void cmd_s(struct listening *l)
{
	char *body = l->ops.system_info ? l->ops.system_info(l->ops.ctx) : NULL;
	if (!body) {
		/* WrappedStreamAppender writes "{" lazily: nothing appended → only "}\r\n"
		 * (docs/device/console.md#module-info-reply).
		 */
		listening_print(l, "}\r\n");
		return;
	}
	if (body[0] == '{') {
		listening_print(l, body);
		listening_print(l, "\r\n");
	} else {
		listening_print(l, "{");
		listening_print(l, body);
		listening_print(l, "}\r\n");
	}
	free(body);
}

static void cmd_v(struct listening *l)
{
	/* append_system_version_info() ends with "\n", the console adds "\r\n"
	 * (docs/device/console.md#commands). */
	listening_printf(l, "system firmware version: %s\n\r\n", l->os_version);
}

static void cmd_d(struct listening *l)
{
	/* system_format_diag_data(): compact JSON of the diagnostic sources. */
	listening_printf(l, "{\"sys:uptime\":%llu,\"mem:used\":%u,\"mem:total\":%u}\r\n",
			 (unsigned long long)(l->now_ms / 1000), 41216u, 167424u);
}

static void cmd_f(struct listening *l, uint64_t now_ms)
{
	listening_print(l, "Waiting for the binary file to be sent ... (press 'a' to abort)\r\n");
	if (l->cfg.era == LISTENING_ERA_6) {
		/* 6.0.0: HAL_Delay_Milliseconds(100), four CAN, the refusal
		 * (docs/device/console.md#commands). */
		listening_start_busy(l, BUSY_F6_CANCEL, now_ms, LISTENING_F6_DELAY_MS);
		return;
	}
	ymodem_rx_start(l, now_ms);
}

static void security_prompt(struct listening *l)
{
	if (wifi_enterprise(l))
		listening_print(l, "Security 0=unsecured, 1=WEP, 2=WPA, 3=WPA2, 4=WPA Enterprise, "
				   "5=WPA2 Enterprise: ");
	else
		listening_print(l, "Security 0=unsecured, 1=WEP, 2=WPA, 3=WPA2: ");
	console_start_line(l, STEP_SECURITY, 1);
}

static void wifi_save(struct listening *l)
{
	listening_print(l, "Thanks! Wait while I save those credentials...\r\n\r\n");
	listening_print(l, "Awesome. Now we'll connect!\r\n\r\n");
	/* 0.4-era text has no space after "device" (v0.5.0 system_setup.cpp). */
	listening_print(l, l->cfg.era == LISTENING_ERA_0_4
			       ? "If you see a pulsing cyan light, your device\r\n"
			       : "If you see a pulsing cyan light, your device \r\n");
	listening_print(l, "has connected to the Cloud and is ready to go!\r\n\r\n");
	listening_print(l, "If your LED flashes red or you encounter any other problems,\r\n");
	listening_print(l, "visit https://www.particle.io/support to debug.\r\n\r\n");
	listening_print(l, "    Particle <3 you!\r\n\r\n");
	l->sub = CONSOLE_IDLE;
	/* Saved credentials end listening mode (docs/device/console.md#entering-and-leaving). */
	l->kind = LISTENING_APP;
	if (l->ops.exit_listening)
		l->ops.exit_listening(l->ops.ctx);
}

static void multiline_prompt(struct listening *l, enum line_step step, const char *text)
{
	listening_print(l, text);
	l->multiline = true;
	l->multi_left = LISTENING_MULTILINE_MAX;
	console_start_line(l, step, l->multi_left);
}

static void wifi_after_password(struct listening *l)
{
	if (l->wifi_security >= 4 && l->wifi_security <= 5) {
		listening_print(l, "EAP Type 0=PEAP/MSCHAPv2, 1=EAP-TLS: ");
		console_start_line(l, STEP_EAP_TYPE, 1);
		return;
	}
	wifi_save(l);
}

static void wifi_after_cipher(struct listening *l)
{
	int s = l->wifi_security;
	if ((s > 0 && s <= 3) || s == 6) {
		listening_print(l, "Password: ");
		console_start_line(l, STEP_PASSWORD, LISTENING_LINE_MAX);
		return;
	}
	wifi_after_password(l);
}

/* A finished line (already followed by "\r\n" and the flush). */
static void line_done(struct listening *l, const char *line, size_t len)
{
	char c0 = line[0];
	l->sub = CONSOLE_IDLE;
	switch (l->step) {
	case STEP_CLAIM:
		if (strlen(line) == 63)
			listening_printf(l, "Claim code set to: %s", line);
		else
			listening_print(
			    l,
			    "Sorry, claim code is not 63 characters long. Claim code unchanged.");
		listening_print(l, "\r\n");
		return;
	case STEP_SSID:
		/* 1.5+ asks again for an empty SSID; 0.4-era took it as it came. */
		if (strlen(line) == 0 && l->cfg.era != LISTENING_ERA_0_4) {
			listening_print(l, "SSID: ");
			console_start_line(l, STEP_SSID, 32);
			return;
		}
		/* No scan result in the simulator: the AP is "not found", ask for security. */
		security_prompt(l);
		return;
	case STEP_SECURITY: {
		bool ok = c0 >= '0' && c0 <= '3';
		if (wifi_enterprise(l))
			ok = c0 >= '0' && c0 <= '6';
		else if (l->cfg.era == LISTENING_ERA_3 && c0 == '6')
			ok = true; /* WPA3 (5.x) */
		if (!ok) {
			security_prompt(l);
			return;
		}
		l->wifi_security = c0 - '0';
		if (l->cfg.era == LISTENING_ERA_0_4) {
			wifi_after_cipher(l);
			return;
		}
		/* cipher_ stays WLAN_CIPHER_NOT_SET without a scan hit: always asked. */
		listening_print(l, "Security Cipher 1=AES, 2=TKIP, 3=AES+TKIP: ");
		console_start_line(l, STEP_CIPHER, 1);
		return;
	}
	case STEP_CIPHER:
		if (c0 < '1' || c0 > '3') {
			listening_print(l, "Security Cipher 1=AES, 2=TKIP, 3=AES+TKIP: ");
			console_start_line(l, STEP_CIPHER, 1);
			return;
		}
		wifi_after_cipher(l);
		return;
	case STEP_PASSWORD:
		wifi_after_password(l);
		return;
	case STEP_EAP_TYPE:
		if (c0 < '0' || c0 > '1') {
			listening_print(l, "EAP Type 0=PEAP/MSCHAPv2, 1=EAP-TLS: ");
			console_start_line(l, STEP_EAP_TYPE, 1);
			return;
		}
		l->wifi_enterprise_tls = c0 == '1';
		if (l->wifi_enterprise_tls) {
			multiline_prompt(l, STEP_EAP_CLIENT_CERT,
					 "Client certificate in PEM format:\r\n");
		} else {
			listening_print(l, "Username: ");
			console_start_line(l, STEP_EAP_USERNAME, LISTENING_LINE_MAX);
		}
		return;
	case STEP_EAP_CLIENT_CERT:
		multiline_prompt(l, STEP_EAP_PRIVATE_KEY, "Private key in PEM format:\r\n");
		return;
	case STEP_EAP_USERNAME:
		listening_print(l, "Password: ");
		console_start_line(l, STEP_EAP_PASSWORD, LISTENING_LINE_MAX);
		return;
	case STEP_EAP_PRIVATE_KEY:
	case STEP_EAP_PASSWORD:
		listening_print(l, "Outer identity (optional): ");
		console_start_line(l, STEP_EAP_OUTER, LISTENING_LINE_MAX);
		return;
	case STEP_EAP_OUTER:
		multiline_prompt(l, STEP_EAP_ROOT_CA, "Root CA in PEM format (optional):\r\n");
		return;
	case STEP_EAP_ROOT_CA:
		wifi_save(l);
		return;
	}
	(void)len;
}

void console_start_line(struct listening *l, enum line_step step, size_t max_len)
{
	l->sub = CONSOLE_LINE;
	l->step = step;
	l->line_len = 0;
	l->line_max = max_len;
	l->line[0] = '\0';
	if (step != STEP_EAP_CLIENT_CERT && step != STEP_EAP_PRIVATE_KEY &&
	    step != STEP_EAP_ROOT_CA)
		l->multiline = false;
}

static void line_end(struct listening *l)
{
	size_t n = l->line_len < LISTENING_LINE_MAX ? l->line_len : LISTENING_LINE_MAX;
	l->line[n] = '\0';
	listening_print(l, "\r\n");
	if (l->multiline) {
		/* read_multiline(): lines until an empty one (no flush then), or
		 * until the buffer is nearly full (flush). */
		if (l->line_len == 0) {
			l->multiline = false;
			line_done(l, l->line, 0);
			return;
		}
		l->multi_left -= l->line_len < l->multi_left ? l->line_len : l->multi_left;
		if (l->multi_left > 3) {
			enum line_step step = l->step;
			console_start_line(l, step, l->multi_left);
			return;
		}
		l->multiline = false;
		l->discard_rest = true;
		line_done(l, l->line, n);
		return;
	}
	l->discard_rest = true;
	line_done(l, l->line, n);
}

static void line_byte(struct listening *l, uint8_t c)
{
	if (l->line_len == l->line_max || c == '\r' || c == '\n') {
		line_end(l);
		return;
	}
	if (c == 8 || c == 127) {
		if (l->line_len == 0)
			return;
		l->line_len--;
	} else {
		if (l->line_len < LISTENING_LINE_MAX)
			l->line[l->line_len] = (char)c;
		l->line_len++;
	}
	listening_send(l, &c, 1);
}

static void command(struct listening *l, char c, uint64_t now_ms)
{
	if (!key_known(l, c))
		return;
	if (c != 'x' && c != 'L')
		app_stray_output(l);
	switch (c) {
	case 'i':
		cmd_i(l);
		return;
	case 'm':
		cmd_m(l);
		return;
	case 's':
		cmd_s(l);
		return;
	case 'v':
		cmd_v(l);
		return;
	case 'd':
		cmd_d(l);
		return;
	case 'f':
		cmd_f(l, now_ms);
		return;
	case 'c':
		listening_print(l, "Device claimed: no\r\n");
		return;
	case 'C':
		listening_print(l, "Enter 63-digit claim code: ");
		console_start_line(l, STEP_CLAIM, 63);
		return;
	case 'w':
		memset(l->line, 0, sizeof(l->line));
		l->wifi_security = 0;
		listening_print(l, "SSID: ");
		console_start_line(l, STEP_SSID, 32);
		return;
	case 'x':
		l->kind = LISTENING_APP;
		if (l->ops.exit_listening)
			l->ops.exit_listening(l->ops.ctx);
		return;
	case 'L':
		/* Startup-listen flag + safe mode: the device resets
		 * (docs/device/console.md#entering-and-leaving). */
		listening_do_reset(l, LISTENING_RESET_SAFE_LISTENING);
		return;
	}
}

void console_byte(struct listening *l, uint8_t c, uint64_t now_ms)
{
	if (l->sub == CONSOLE_LINE)
		line_byte(l, c);
	else
		command(l, (char)c, now_ms);
}
