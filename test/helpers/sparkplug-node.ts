/**
 * A SparkplugNode in a process of its own, so a test can SIGKILL it and see what the broker does
 * with the Will. Options as JSON in argv[2]; one log line per event on stdout.
 */
import { SparkplugNode, type SparkplugOptions } from '../../src/publish/sparkplug/index.ts';

const opts = JSON.parse(process.argv[2]!) as SparkplugOptions;
const node = new SparkplugNode(opts, { command: async () => ({}), connection: (s) => console.log(`connection ${JSON.stringify(s)}`) }, (level, msg) => console.log(`${level} ${msg}`));
await node.start();
console.log('started');
let n = 0;
setInterval(() => node.update({ verdicts: { OK: ++n } }), 200);
