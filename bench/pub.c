/*
 * A cheap MQTT load generator for bench/ingest.py (--publisher c): one connection, QoS 1, paced to a rate,
 * at most `inflight` messages unacknowledged. It exists so that the publisher takes as little as possible of
 * the two cores that the broker, PostgreSQL and `pulse ingest` share with it.
 *
 * Usage: pub HOST PORT CLIENT_ID TENANT FIRST STEP COUNT RATE DURATION_S SEQ_BASE INFLIGHT [METRICS SILENT_AT SILENT]
 *   devices are d{FIRST}, d{FIRST+STEP}, ... (COUNT of them), published round-robin;
 *   seq of a device = SEQ_BASE + its round (turns before it / COUNT), as the Python publisher does.
 *   Without METRICS a message carries {"v": n}. With METRICS (bench/evaluate.py's steady telemetry) it carries two
 *   of m0..m{METRICS-1} in turn by round, values 40-59, and the devices in SILENT (comma-separated numbers) send
 *   nothing from SILENT_AT seconds on.
 * Prints one JSON line: sent, cpu_s, wall_s, unacked.
 * It speaks MQTT 3.1.1 over a plain socket itself: the PUBLISH packets of one pacing tick go out in one
 * write(), and PUBACKs are read without blocking (a client library writes once per message).
 * Build: cc -O2 -o pub bench/pub.c
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void iso_now(char *out, size_t n) {
    struct timespec t;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &t);
    gmtime_r(&t.tv_sec, &tm);
    size_t len = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + len, n - len, ".%06ld+00:00", t.tv_nsec / 1000);
}

static int write_all(int fd, const unsigned char *buf, size_t len) {
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -1;
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Remaining-length varint; returns bytes written. */
static size_t put_len(unsigned char *p, size_t len) {
    size_t i = 0;
    do {
        unsigned char b = len % 128;
        len /= 128;
        p[i++] = len ? (b | 0x80) : b;
    } while (len);
    return i;
}

static long acked = 0;
static unsigned char rbuf[65536];
static size_t rlen = 0;

/* Read what has arrived (without blocking unless `wait_ms` > 0) and count the PUBACKs in it. */
static int read_acks(int fd, int wait_ms) {
    struct timeval tv = {0, wait_ms * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t r = recv(fd, rbuf + rlen, sizeof rbuf - rlen, wait_ms > 0 ? 0 : MSG_DONTWAIT);
    if (r == 0) return -1;
    if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
    rlen += (size_t)r;
    size_t off = 0;
    while (rlen - off >= 2) {
        size_t plen = rbuf[off + 1]; /* every packet the broker sends us here is short (< 128 bytes) */
        if (rlen - off < 2 + plen) break;
        if ((rbuf[off] & 0xF0) == 0x40) acked++;
        off += 2 + plen;
    }
    memmove(rbuf, rbuf + off, rlen - off);
    rlen -= off;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 12 && argc != 15) {
        fprintf(stderr, "usage: pub HOST PORT CLIENT_ID TENANT FIRST STEP COUNT RATE DURATION_S SEQ_BASE INFLIGHT "
                        "[METRICS SILENT_AT SILENT]\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    const char *client_id = argv[3];
    const char *tenant = argv[4];
    long first = atol(argv[5]), step = atol(argv[6]), count = atol(argv[7]);
    double rate = atof(argv[8]), duration = atof(argv[9]);
    long seq_base = atol(argv[10]), inflight = atol(argv[11]);
    long metrics = argc == 15 ? atol(argv[12]) : 0;
    double silent_at = argc == 15 ? atof(argv[13]) : 0;
    static char silent[1 << 20]; /* silent[device number] */
    if (argc == 15) {
        for (char *p = argv[14]; *p;) {
            long d = strtol(p, &p, 10);
            if (d >= 0 && d < (long)sizeof silent) silent[d] = 1;
            if (*p == ',') p++; else break;
        }
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    inet_pton(AF_INET, host, &addr.sin_addr);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("connect"); return 1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    /* CONNECT: MQTT 3.1.1, clean session, keepalive off. */
    unsigned char pkt[512];
    size_t idlen = strlen(client_id), vh = 10 + 2 + idlen, i = 0;
    pkt[i++] = 0x10;
    i += put_len(pkt + i, vh);
    const unsigned char proto[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0};
    memcpy(pkt + i, proto, sizeof proto);
    i += sizeof proto;
    pkt[i++] = (unsigned char)(idlen >> 8);
    pkt[i++] = (unsigned char)idlen;
    memcpy(pkt + i, client_id, idlen);
    i += idlen;
    if (write_all(fd, pkt, i) != 0) { perror("write"); return 1; }
    unsigned char connack[4];
    if (recv(fd, connack, 4, MSG_WAITALL) != 4 || connack[0] != 0x20 || connack[3] != 0) {
        fprintf(stderr, "no CONNACK\n");
        return 1;
    }

    static unsigned char out[500 * 320];
    char topic[200], payload[200], ts[64];
    long sent = 0, turn = 0;
    unsigned short mid = 0;
    double start = now_s();
    for (;;) {
        double elapsed = now_s() - start;
        if (elapsed >= duration) break;
        long due = (long)(elapsed * rate) - sent;
        long room = inflight - (sent - acked);
        long n = due < room ? due : room;
        if (n > 500) n = 500;
        size_t o = 0;
        if (n > 0) {
            iso_now(ts, sizeof ts);
            long skipped = 0;
            for (long k = 0; k < n && skipped <= count;) { /* a whole round of silent devices: wait for the next tick */
                long slot = turn++, idx = slot % count, round = slot / count;
                long dev = first + idx * step;
                if (metrics && elapsed >= silent_at && dev < (long)sizeof silent && silent[dev]) {
                    skipped++;
                    continue;
                }
                k++;
                long seq = seq_base + round;
                int tl = snprintf(topic, sizeof topic, "tenant/%s/device/d%ld/telemetry", tenant, dev);
                int pl = metrics
                    ? snprintf(payload, sizeof payload,
                               "{\"ts\":\"%s\",\"seq\":%ld,\"metrics\":{\"m%ld\":%ld,\"m%ld\":%ld}}", ts, seq,
                               round % metrics, 40 + (round * 7 + idx) % 20, (round + 1) % metrics,
                               40 + (round * 3 + idx) % 20)
                    : snprintf(payload, sizeof payload, "{\"ts\":\"%s\",\"seq\":%ld,\"metrics\":{\"v\":%ld}}",
                               ts, seq, sent);
                if (++mid == 0) mid = 1;
                out[o++] = 0x32; /* PUBLISH, QoS 1 */
                o += put_len(out + o, (size_t)(2 + tl + 2 + pl));
                out[o++] = (unsigned char)(tl >> 8);
                out[o++] = (unsigned char)tl;
                memcpy(out + o, topic, (size_t)tl);
                o += (size_t)tl;
                out[o++] = (unsigned char)(mid >> 8);
                out[o++] = (unsigned char)mid;
                memcpy(out + o, payload, (size_t)pl);
                o += (size_t)pl;
                sent++;
            }
            if (write_all(fd, out, o) != 0) { perror("write"); break; }
        }
        if (read_acks(fd, n > 0 ? 0 : 1) != 0) { fprintf(stderr, "connection lost\n"); break; }
    }
    double deadline = now_s() + 60;
    while (acked < sent && now_s() < deadline) {
        if (read_acks(fd, 10) != 0) break;
    }
    double wall = now_s() - start;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("{\"sent\": %ld, \"cpu_s\": %.2f, \"wall_s\": %.2f, \"unacked\": %ld}\n", sent, cpu, wall, sent - acked);
    const unsigned char disconnect[] = {0xE0, 0};
    write_all(fd, disconnect, 2);
    close(fd);
    return 0;
}
