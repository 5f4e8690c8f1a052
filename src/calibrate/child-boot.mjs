// The calibration child process starts without the daemon's tsx loader: register it, then run the entry.
const { register } = await import('tsx/esm/api');
register();
await import('./child-entry.ts');
