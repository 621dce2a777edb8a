/* The MQTT publisher's configuration ([mqtt]), broker URLs, and its bounded queue. */
#include "mqtt.h"
#include "mqtt_url.h"
#include "registry.h"
#include "settings.h"

#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static int parse(struct config *c, const char *text, struct error *err)
{
	config_defaults(c);
	error_init(err);
	return config_parse(c, text, "test.conf", err);
}

static void test_url_forms(void **state)
{
	(void)state;
	char host[64];
	int port;
	bool tls;
	assert_int_equal(
	    mqtt_url_parse("mqtt://broker.plant:1884", host, sizeof(host), &port, &tls), 0);
	assert_string_equal(host, "broker.plant");
	assert_int_equal(port, 1884);
	assert_false(tls);
	assert_int_equal(mqtt_url_parse("mqtts://broker.plant", host, sizeof(host), &port, &tls),
			 0);
	assert_int_equal(port, 8883);
	assert_true(tls);
	assert_int_equal(mqtt_url_parse("mqtt://10.0.0.5", host, sizeof(host), &port, &tls), 0);
	assert_int_equal(port, 1883);
	assert_int_equal(mqtt_url_parse("mqtt://[::1]:1883", host, sizeof(host), &port, &tls), 0);
	assert_string_equal(host, "::1");
	static const char *const bad[] = {"tcp://broker:1883",
					  "mqtt://",
					  "mqtt://:1883",
					  "mqtt://broker:0",
					  "mqtt://broker:70000",
					  "mqtt://broker:12x",
					  "mqtt://user@broker",
					  "mqtt://[::1",
					  "mqtt://broker/topic",
					  "http://broker:1883",
					  NULL};
	for (size_t i = 0; bad[i]; i++)
		assert_int_equal(mqtt_url_parse(bad[i], host, sizeof(host), &port, &tls), -1);
}

static void test_config_keys_and_defaults(void **state)
{
	(void)state;
	struct config c;
	struct error err;
	assert_int_equal(parse(&c, "", &err), 0);
	assert_false(c.mqtt.enabled);
	assert_string_equal(c.mqtt.topic_prefix, "flashd");
	assert_int_equal(c.mqtt.qos, 1);
	assert_int_equal(c.mqtt.queue_max, MQTT_QUEUE_DEFAULT);
	assert_int_equal(parse(&c,
			       "[mqtt]\nurl = mqtts://broker:8884\nstation = line1-a\n"
			       "topic_prefix = plant/north\nca_file = /etc/ca.pem\n"
			       "cert_file = /etc/st.pem\nkey_file = /etc/st.key\n"
			       "password_file = /etc/pw\nqos = 2\nqueue = 10\n",
			       &err),
			 0);
	assert_true(c.mqtt.enabled && c.mqtt.tls);
	assert_string_equal(c.mqtt.host, "broker");
	assert_int_equal(c.mqtt.port, 8884);
	assert_string_equal(c.mqtt.station, "line1-a");
	assert_string_equal(c.mqtt.topic_prefix, "plant/north");
	assert_string_equal(c.mqtt.ca_file, "/etc/ca.pem");
	assert_string_equal(c.mqtt.password_file, "/etc/pw");
	assert_int_equal(c.mqtt.qos, 2);
	assert_int_equal(c.mqtt.queue_max, 10);
}

static void test_config_refuses_bad_sections(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    /* names that would break topics */
	    "[mqtt]\nurl = mqtt://b\nstation = line/1\n",
	    "[mqtt]\nurl = mqtt://b\nstation = line+1\n", "[mqtt]\nurl = mqtt://b\nstation = +\n",
	    "[mqtt]\nurl = mqtt://b\nstation = ok\ntopic_prefix = a/+/b\n",
	    "[mqtt]\nurl = mqtt://b\nstation = ok\ntopic_prefix = /a\n",
	    "[mqtt]\nurl = mqtt://b\nstation = ok\ntopic_prefix = a//b\n",
	    "[mqtt]\nurl = mqtt://b\nstation = ok\ntopic_prefix = a/\n",
	    "[mqtt]\nurl = mqtt://b\nstation = "
	    "a234567890123456789012345678901234567890123456789012345678901234\n",
	    /* the section as a whole */
	    "[mqtt]\nurl = mqtt://b\n",				       /* no station */
	    "[mqtt]\nstation = ok\n",				       /* no url */
	    "[mqtt]\nurl = mqtt://b\nstation = ok\nca_file = /ca\n",   /* TLS file, no mqtts */
	    "[mqtt]\nurl = mqtts://b\nstation = ok\ncert_file = /c\n", /* no key_file */
	    /* values */
	    "[mqtt]\nurl = tcp://b\nstation = ok\n",
	    "[mqtt]\nurl = mqtt://b\nstation = ok\nqos = 3\n",
	    "[mqtt]\nurl = mqtt://b\nstation = ok\nqueue = 0\n",
	    "[mqtt]\nurl = mqtt://b\nstation = ok\npassword_file = relative\n",
	    "[mqtt]\nurl = mqtt://b\nstation = ok\nretain = yes\n", NULL};
	for (size_t i = 0; bad[i]; i++) {
		struct config c;
		struct error err;
		if (parse(&c, bad[i], &err) != -1 || err.code != ERR_MQTT_CONFIG)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(strstr(err.message, "[mqtt]"));
		error_clear(&err);
	}
}

/* A device that is enough for device_to_json(). */
static void fake_device(struct device *d, const char *key)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->s.key, sizeof(d->s.key), "%s", key);
	d->s.present = true;
}

static json_int_t status_int(struct mqtt *m, const char *key)
{
	json_t *s = mqtt_status_json(m);
	json_int_t v = json_integer_value(json_object_get(s, key));
	json_decref(s);
	return v;
}

/* The broker is not there: messages wait, the oldest go when the queue is full,
 * a retained message replaces the waiting one of its topic; nothing blocks. */
static void test_queue_is_bounded_and_counts_drops(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct mqtt_config cfg;
	struct error err;
	error_init(&err);
	mqtt_config_defaults(&cfg);
	assert_int_equal(mqtt_config_set(&cfg, "url", "mqtt://127.0.0.1:1", "t", &err), 0);
	assert_int_equal(mqtt_config_set(&cfg, "station", "unit", "t", &err), 0);
	cfg.queue_max = 3;
	struct mqtt *m = mqtt_new(base, &cfg, NULL, &err);
	assert_non_null(m);
	mqtt_start(m);
	event_base_loop(base, EVLOOP_NONBLOCK);
	json_t *s = mqtt_status_json(m);
	assert_true(json_is_false(json_object_get(s, "connected")));
	json_decref(s);

	struct device d;
	fake_device(&d, "3a001d000a47353138383101");
	for (int i = 0; i < 5; i++)
		mqtt_device_event(m, &d, REGISTRY_CHANGED);
	assert_int_equal(status_int(m, "queued"), 1); /* one retained topic */
	assert_int_equal(status_int(m, "dropped"), 0);
	mqtt_device_event(m, &d, REGISTRY_REMOVED); /* the clearing message replaces it */
	assert_int_equal(status_int(m, "queued"), 1);

	char key[32];
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "usb-1-%d", i);
		fake_device(&d, key);
		mqtt_device_event(m, &d, REGISTRY_ADDED);
	}
	assert_int_equal(status_int(m, "queued"), 3);
	assert_int_equal(status_int(m, "dropped"), 3);
	mqtt_free(m);
	event_base_free(base);
}

static void test_name_rules(void **state)
{
	(void)state;
	assert_true(mqtt_name_valid("line1-a", false));
	assert_true(mqtt_name_valid("Werk 2 · Linie 3", false));
	assert_false(mqtt_name_valid("", false));
	assert_false(mqtt_name_valid("a/b", false));
	assert_false(mqtt_name_valid("a#", false));
	assert_false(mqtt_name_valid("a\tb", false));
	assert_true(mqtt_name_valid("plant/north/flashd", true));
	assert_false(mqtt_name_valid("plant/#", true));
	assert_false(mqtt_name_valid("plant//x", true));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_url_forms),
	    cmocka_unit_test(test_config_keys_and_defaults),
	    cmocka_unit_test(test_config_refuses_bad_sections),
	    cmocka_unit_test(test_name_rules),
	    cmocka_unit_test(test_queue_is_bounded_and_counts_drops),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
