// Reference worker for `cargo bench --bench pipeline` (BENCH_NODE=1): the
// Node.js approach the bridge is measured against (issue 11: ≥ 6 × this).
//
// Same job as `fanout-bridge run`, without retries or a dead-letter queue:
// consume with manual acks at BRIDGE_PREFETCH, POST the body as is to the user
// API and the {"event","data","message_id"} envelope to the logging API, both
// at once (Promise.all), ack when both answered 2xx, else nack without
// requeue. Keep-alive HTTP agents, as any production Node worker would use.
//
// It reads the bridge's own variables (BRIDGE_AMQP_URL, BRIDGE_QUEUE,
// BRIDGE_USER_API_URL, BRIDGE_LOG_API_URL, BRIDGE_PREFETCH,
// BRIDGE_METRICS_ADDR) and serves the two things the benchmark polls:
// GET /readyz (200 once consuming) and GET /metrics with the bridge's
// bridge_messages_total{outcome=...} and bridge_messages_in_flight lines.
// SIGTERM: stop consuming, close, exit 0.

'use strict';

const http = require('node:http');
const amqp = require('amqplib');
const axios = require('axios');

const env = (name, fallback) => {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (fallback === undefined) {
      console.error(`${name} is required`);
      process.exit(2);
    }
    return fallback;
  }
  return v;
};

const amqpUrl = env('BRIDGE_AMQP_URL', 'amqp://guest:guest@127.0.0.1:5672/%2f');
const queue = env('BRIDGE_QUEUE');
const userUrl = env('BRIDGE_USER_API_URL');
const logUrl = env('BRIDGE_LOG_API_URL');
const prefetch = Number(env('BRIDGE_PREFETCH', '64'));
const [metricsHost, metricsPort] = env('BRIDGE_METRICS_ADDR', '127.0.0.1:9090').split(':');
const defaultEvent = env('BRIDGE_LOG_EVENT', 'user.registered');

const agent = new http.Agent({ keepAlive: true });
const client = axios.create({
  httpAgent: agent,
  timeout: 10000,
  headers: { 'Content-Type': 'application/json' },
  // The body is sent as the bytes we were given, not re-serialised.
  transformRequest: [(data) => data],
  validateStatus: () => true,
  proxy: false,
});

const counts = { acked: 0, dead_lettered: 0 };
let inFlight = 0;
let ready = false;

const server = http.createServer((req, res) => {
  if (req.url === '/readyz') {
    res.writeHead(ready ? 200 : 503).end(ready ? 'ready\n' : 'starting\n');
  } else if (req.url === '/metrics') {
    res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(
      `bridge_messages_total{outcome="acked"} ${counts.acked}\n` +
        `bridge_messages_total{outcome="dead_lettered"} ${counts.dead_lettered}\n` +
        `bridge_messages_in_flight ${inFlight}\n`,
    );
  } else {
    res.writeHead(404).end();
  }
});

async function main() {
  const conn = await amqp.connect(amqpUrl);
  const ch = await conn.createChannel();
  await ch.prefetch(prefetch);
  await ch.checkQueue(queue);

  const handle = async (msg) => {
    inFlight += 1;
    const id = msg.properties.messageId || '';
    const event = msg.properties.type || defaultEvent;
    const body = msg.content;
    const envelope = Buffer.concat([
      Buffer.from(`{"event":${JSON.stringify(event)},"data":`),
      body,
      Buffer.from(`,"message_id":${JSON.stringify(id)}}`),
    ]);
    const headers = id ? { 'Idempotency-Key': id } : {};
    let ok = false;
    try {
      const [u, l] = await Promise.all([
        client.post(userUrl, body, { headers }),
        client.post(logUrl, envelope, { headers }),
      ]);
      ok = u.status >= 200 && u.status < 300 && l.status >= 200 && l.status < 300;
    } catch (e) {
      console.error(`message ${id}: ${e.message}`);
    }
    inFlight -= 1;
    if (ok) {
      ch.ack(msg);
      counts.acked += 1;
    } else {
      ch.nack(msg, false, false);
      counts.dead_lettered += 1;
    }
  };

  const { consumerTag } = await ch.consume(queue, (msg) => {
    if (msg !== null) handle(msg);
  });
  ready = true;

  let stopping = false;
  process.on('SIGTERM', async () => {
    if (stopping) return;
    stopping = true;
    ready = false;
    try {
      await ch.cancel(consumerTag);
      await ch.close();
      await conn.close();
    } catch (e) {
      console.error(`closing: ${e.message}`);
    }
    server.close();
    process.exit(0);
  });
}

server.listen(Number(metricsPort), metricsHost, () => {
  main().catch((e) => {
    console.error(`node reference worker: ${e.stack || e}`);
    process.exit(1);
  });
});
