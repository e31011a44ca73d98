/*
 * Pulse's ingest gate: a Mosquitto 2.0 plugin that keeps device connections out until `pulse ingest` has
 * subscribed to the device topics since the broker started.
 *
 * Mosquitto 2.0 restores persistent sessions and their queued messages from its persistence file, but not their
 * shared (`$share/...`) subscriptions. After a restart, until ingest subscribes again, a device message has no
 * subscriber: the broker acknowledges it (MQTT 5: PUBACK 0x10, MQTT 3.1.1: a plain PUBACK) and drops it. With the
 * gate, a device that connects in that window has its connection closed before CONNACK, keeps its messages and
 * connects again later, as it does whenever a broker is not reachable. Nothing it sends is acknowledged until
 * ingest is there to receive it.
 *
 * Held while the gate is closed: device accounts (a username with a '/': Pulse names them {tenant_id}/{device_id})
 * and the accounts named in plugin_opt_hold, such as the simulator's or a gateway's that publish for many devices.
 * Every other account (Pulse's admin and ingest accounts, `pulse deliver` publishing alerts, alert consumers)
 * connects as usual. The gate opens, for the rest of the broker's life, when an account named in
 * plugin_opt_ingest asks to subscribe to the device topics. It decides nothing else: authentication and access
 * control stay with the dynamic-security plugin, which must come after it in mosquitto.conf.
 *
 * Options (after the plugin's line in mosquitto.conf; names separated by spaces):
 *   plugin_opt_ingest          the accounts `pulse ingest` connects with (default pulse-ingest)
 *   plugin_opt_hold            further accounts to hold besides device accounts (default none)
 *   plugin_opt_ingest_filter   the topic filter ingest subscribes to, bare or as $share/<group>/<filter>
 *                              (default tenant/+/device/+/+)
 * Build: cc -shared -fPIC -O2 -o pulse_ingest_gate.so ingest_gate.c
 * (headers from Debian's mosquitto-dev and libmosquitto-dev).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define DEFAULT_FILTER "tenant/+/device/+/+"
#define HELD_LOG_EVERY_S 10

struct gate {
	mosquitto_plugin_id_t *id;
	char **ingest;      /* pointers into ingest_names */
	char *ingest_names;
	int ingest_count;
	char **hold;        /* pointers into hold_names */
	char *hold_names;
	int hold_count;
	char *filter;
	bool open;
	time_t started;
	long held;          /* connections closed while the gate was closed */
	long held_logged;
	time_t held_logged_at;
};

static struct gate gate;

static bool named(char **names, int count, const char *username)
{
	for(int i = 0; i < count; i++){
		if(strcmp(names[i], username) == 0) return true;
	}
	return false;
}

static bool held(const char *username)
{
	if(username == NULL) return false;
	return strchr(username, '/') != NULL || named(gate.hold, gate.hold_count, username);
}

/* The filter itself, or "$share/<group>/" followed by it. */
static bool is_ingest_filter(const char *topic)
{
	if(topic == NULL) return false;
	if(strcmp(topic, gate.filter) == 0) return true;
	if(strncmp(topic, "$share/", 7) != 0) return false;
	const char *slash = strchr(topic + 7, '/');
	return slash != NULL && slash != topic + 7 && strcmp(slash + 1, gate.filter) == 0;
}

static void log_held(bool force)
{
	time_t now = time(NULL);
	if(gate.held == gate.held_logged) return;
	if(!force && now - gate.held_logged_at < HELD_LOG_EVERY_S) return;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "pulse ingest gate: closed, %ld connection(s) of devices held off so far "
			"(waiting for ingest to subscribe to %s)", gate.held, gate.filter);
	gate.held_logged = gate.held;
	gate.held_logged_at = now;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	(void)event; (void)userdata;
	if(gate.open || !held(ed->username)) return MOSQ_ERR_PLUGIN_DEFER;
	/* Not MOSQ_ERR_AUTH: "not authorised" would tell the device its credentials are wrong. Any other error
	 * closes the connection without a CONNACK, as a broker that is not ready yet would. */
	gate.held++;
	log_held(false);
	return MOSQ_ERR_CONN_REFUSED;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event; (void)userdata;
	if(gate.open || ed->access != MOSQ_ACL_SUBSCRIBE) return MOSQ_ERR_PLUGIN_DEFER;  /* every publish passes here */
	const char *username = mosquitto_client_username(ed->client);
	if(username != NULL && is_ingest_filter(ed->topic) && named(gate.ingest, gate.ingest_count, username)){
		gate.open = true;
		log_held(true);
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "pulse ingest gate: open after %lds (%s, client %s, subscribed to %s)",
				(long)(time(NULL) - gate.started), username,
				mosquitto_client_id(ed->client), ed->topic);
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

static int fail(const char *why)
{
	mosquitto_log_printf(MOSQ_LOG_ERR, "pulse ingest gate: %s", why);
	return MOSQ_ERR_INVAL;
}

/* The names in `text` (separated by spaces or commas): an array of pointers into `*buffer`, a copy of `text`. */
static char **split(const char *text, char **buffer, int *count)
{
	char **names = calloc(strlen(text) / 2 + 1, sizeof(char *));
	*buffer = strdup(text);
	*count = 0;
	if(names == NULL || *buffer == NULL) return NULL;
	for(char *save = NULL, *name = strtok_r(*buffer, " \t,", &save); name; name = strtok_r(NULL, " \t,", &save)){
		names[(*count)++] = name;
	}
	return names;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *opts,
		int opt_count)
{
	const char *ingest = "pulse-ingest";
	const char *hold = "";
	const char *filter = DEFAULT_FILTER;
	memset(&gate, 0, sizeof(gate));
	for(int i = 0; i < opt_count; i++){
		if(strcmp(opts[i].key, "ingest") == 0){
			ingest = opts[i].value;
		}else if(strcmp(opts[i].key, "hold") == 0){
			hold = opts[i].value;
		}else if(strcmp(opts[i].key, "ingest_filter") == 0){
			filter = opts[i].value;
		}else{
			mosquitto_log_printf(MOSQ_LOG_ERR, "pulse ingest gate: unknown option plugin_opt_%s", opts[i].key);
			return MOSQ_ERR_INVAL;
		}
	}
	if(filter[0] == '\0' || filter[0] == '$') return fail("plugin_opt_ingest_filter must be a device topic filter");
	gate.ingest = split(ingest, &gate.ingest_names, &gate.ingest_count);
	gate.hold = split(hold, &gate.hold_names, &gate.hold_count);
	gate.filter = strdup(filter);
	if(gate.ingest == NULL || gate.hold == NULL || gate.filter == NULL) return MOSQ_ERR_NOMEM;
	if(gate.ingest_count == 0) return fail("plugin_opt_ingest names no account");

	gate.id = identifier;
	gate.started = time(NULL);
	*userdata = &gate;
	int rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	}
	if(rc != MOSQ_ERR_SUCCESS) return rc;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "pulse ingest gate: closed until ingest subscribes to %s", gate.filter);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)userdata; (void)opts; (void)opt_count;
	if(gate.id != NULL){
		mosquitto_callback_unregister(gate.id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
		mosquitto_callback_unregister(gate.id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	}
	free(gate.ingest);
	free(gate.ingest_names);
	free(gate.hold);
	free(gate.hold_names);
	free(gate.filter);
	memset(&gate, 0, sizeof(gate));
	return MOSQ_ERR_SUCCESS;
}
