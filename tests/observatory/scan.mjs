#!/usr/bin/env node
// Scan one test host with the real MDN HTTP Observatory (the pinned @mdn/mdn-http-observatory
// of package-lock.json) and print its result as JSON: what the parity test
// tests/integration/test_observatory_parity.py sets beside monitors/headers.py.
//
//   node scan.mjs HOSTNAME --connect-to HOST:PORT:ADDRESS:PORT [--connect-to ...]
//
// Observatory's scan(hostname) always fetches http://HOSTNAME/ and https://HOSTNAME/ on the
// default ports and resolves the name through DNS. The test sites are name-based virtual hosts
// of one nginx on 127.0.0.1 and high ports, under names no DNS knows. So this script redirects
// the transport, and only the transport, as curl's --connect-to does: a TCP connection to
// HOST:PORT is opened to ADDRESS:PORT instead. URLs, Host headers, SNI and certificate names are
// the ones Observatory chose; the package's retriever, analyzers and grader run unchanged.
// A connection to anything not listed is refused (so nothing reaches the real network) and
// reported in "refused".
//
// One input is replaced too: the HSTS preload list. The package reads it from
// conf/hsts-preload.json, which its postinstall downloads from outside the npm registry; the
// install skips that script (npm ci --ignore-scripts), and the scan gets an empty list, the
// same knowledge the prober has (it passes no preloaded hosts to monitors/headers.py).
//
// Output: {"version", "scan", "tests", "connections", "refused"} on success, "tests" as the
// package's own CLI prints them (result, pass, scoreModifier, expectation, route, ...);
// {"version", "error", "connections", "refused"} and exit code 1 when Observatory cannot scan
// the host (down, or a 4xx/5xx page).

import fs from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";
import { parseArgs } from "node:util";

const PACKAGE = "@mdn/mdn-http-observatory";

function usage(message) {
  process.stderr.write(
    `scan.mjs: ${message}\n` +
      "usage: node scan.mjs HOSTNAME --connect-to HOST:PORT:ADDRESS:PORT [--connect-to ...]\n",
  );
  process.exit(2);
}

const { values, positionals } = (() => {
  try {
    return parseArgs({
      options: { "connect-to": { type: "string", multiple: true, default: [] } },
      allowPositionals: true,
    });
  } catch (error) {
    return usage(error.message);
  }
})();
if (positionals.length !== 1) {
  usage("give exactly one HOSTNAME");
}
const hostname = positionals[0].toLowerCase();

/** "host:port" -> {host, port}: where a connection to that host and port really goes. */
const connectTo = new Map();
for (const rule of values["connect-to"]) {
  const [fromHost, fromPort, toHost, toPort, ...rest] = rule.split(":");
  if (rest.length || !fromHost || !toHost || !/^\d+$/.test(fromPort) || !/^\d+$/.test(toPort)) {
    usage(`--connect-to ${rule}: expected HOST:PORT:ADDRESS:PORT`);
  }
  connectTo.set(`${fromHost.toLowerCase()}:${Number(fromPort)}`, {
    host: toHost,
    port: Number(toPort),
  });
}

// axios sends requests to a proxy named in these, past the connect-to map.
for (const name of ["http_proxy", "https_proxy", "all_proxy"]) {
  delete process.env[name];
  delete process.env[name.toUpperCase()];
}

const require = createRequire(import.meta.url);
const packageDir = path.dirname(require.resolve(`${PACKAGE}/package.json`));
const { version } = JSON.parse(fs.readFileSync(path.join(packageDir, "package.json"), "utf8"));

// The empty HSTS preload list (see the top). src/analyzer/hsts.js reads the file with
// fs.readFileSync through the default export of "fs", so this is where it is answered.
const preloadList = path.join(packageDir, "conf", "hsts-preload.json");
const readFileSync = fs.readFileSync;
fs.readFileSync = function (file, ...rest) {
  if (typeof file === "string" && path.resolve(file) === preloadList) {
    return "{}";
  }
  return readFileSync.call(this, file, ...rest);
};

// Every HTTP and HTTPS connection of Node (http.Agent through net.createConnection, https.Agent
// through tls.connect) ends in net.Socket.prototype.connect with an options object, called
// either as connect(options, callback) or, from net.createConnection, with the normalised
// argument array [options, callback]. Only host and port are replaced, in a copy: tls.connect
// keeps its own options, so SNI and the certificate's name check still use the host name.
const connections = [];
const refused = [];
const socketConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  const normalised = Array.isArray(args[0]);
  const options = normalised ? args[0][0] : args[0];
  const host = String(options?.host ?? "localhost").toLowerCase();
  const port = Number(options?.port);
  const to =
    typeof options === "object" && !options.path ? connectTo.get(`${host}:${port}`) : undefined;
  if (to === undefined) {
    refused.push(`${host}:${port}`);
    const error = new Error(`scan.mjs: no --connect-to for ${host}:${port}; connection refused`);
    error.code = "ECONNREFUSED";
    process.nextTick(() => this.destroy(error));
    return this;
  }
  connections.push(`${host}:${port} -> ${to.host}:${to.port}`);
  const routed = { ...options, host: to.host, port: to.port };
  if (normalised) {
    args[0][0] = routed;
  } else {
    args[0] = routed;
  }
  return socketConnect.apply(this, args);
};

const { scan } = await import(PACKAGE);
try {
  const result = await scan(hostname);
  // what the package's own CLI (src/scan.js) prints of each test
  const tests = Object.fromEntries(
    Object.entries(result.tests).map(([name, { scoreDescription, ...test }]) => [name, test]),
  );
  process.stdout.write(
    `${JSON.stringify({ version, scan: result.scan, tests, connections, refused }, null, 2)}\n`,
  );
} catch (error) {
  const message = String(error?.message ?? error);
  process.stdout.write(`${JSON.stringify({ version, error: message, connections, refused })}\n`);
  process.exitCode = 1;
}
