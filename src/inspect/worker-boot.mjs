// Worker threads start without the parent's tsx loader: register it, then run the TypeScript worker.
const { register } = await import('tsx/esm/api');
register();
await import('./worker.ts');
