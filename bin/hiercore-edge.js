#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx, so the installed package needs no build step.
// Each pending GStreamer pull/bus poll, sharp and onnxruntime share the libuv pool; size it before
// anything uses it (a camera needs two threads of its own).
process.env.UV_THREADPOOL_SIZE ??= '8';
const { register } = await import('tsx/esm/api');

register();
await import('../src/cli/main.ts');
