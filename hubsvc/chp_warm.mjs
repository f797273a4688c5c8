// CHP's modules, loaded while `hubsvc run` validates its config (hubsvc/warm.py).
//
//   node chp_warm.mjs /path/to/configurable-http-proxy/bin/configurable-http-proxy FD
//
// Loads CHP's library, then reads one JSON document from the descriptor FD (a pipe from
// hubsvc; stdin is /dev/null, as for CHP executed directly):
//   {"argv0": "...", "args": [...], "env": {...}}
// and runs CHP's own bin script with exactly that command line and environment (the
// process then is CHP). Until it arrives it has read no configuration and bound no port.
// End of that pipe without a document (hubsvc chose not to run CHP, failed a check, or
// died) ends it, quietly.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const bin = process.argv[2];
const controlFd = Number(process.argv[3]);
// CHP's library and its command-line parser (found from the bin script's folder).
// A missing or broken one is not reported here: CHP's own start meets it again and says
// so in its output, as it would have without this loader.
const preload = async (where) => {
  try {
    await import(pathToFileURL(where()).href);
  } catch {
    // see above
  }
};
const loaded = Promise.all([
  preload(() => path.join(path.dirname(bin), "..", "lib", "configproxy.js")),
  preload(() => createRequire(bin).resolve("commander")),
]);

let chunks = [];
const control = fs.createReadStream(null, { fd: controlFd }); // closed at its end
control.on("data", (chunk) => chunks.push(chunk));
control.on("error", () => process.exit(0)); // no such pipe: not started by hubsvc
control.on("end", async () => {
  let text = Buffer.concat(chunks).toString("utf8");
  chunks = []; // nothing of the document (it holds CHP's token) stays referenced here
  if (text === "") {
    process.exit(0); // not wanted
  }
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    process.stderr.write("chp_warm: unreadable command line\n");
    process.exit(70);
  }
  text = "";
  await loaded;
  for (const key of Object.keys(process.env)) {
    delete process.env[key];
  }
  Object.assign(process.env, msg.env);
  process.argv = [process.argv[0], msg.argv0, ...msg.args];
  msg = null;
  await import(pathToFileURL(bin).href);
});
