// A front that serves the pages from dispatch-ui-api/web/ on disk and passes
// everything else (HTTP and the WebSocket upgrade) through to a running qzx.
// For trying the pages against the real services before the binary serves
// them itself, or page changes without rebuilding. Never for production:
// qzx serves its own compiled-in pages.
//
//   node pages-front.mjs <qzx-port> [listen-port]   e.g. in front of `qzx demo`

import http from 'node:http';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Listens on 127.0.0.1:`listenPort` (0: any free port); returns the http.Server. */
export async function pagesFront(backendPort, listenPort = 0) {
  const web = path.resolve(HERE, '../../dispatch-ui-api/web');
  const types = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };
  const server = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    if (req.method === 'GET' && (p === '/' || p === '/terminal' || p.startsWith('/web/'))) {
      const file = p === '/' ? 'board.html' : p === '/terminal' ? 'terminal.html' : path.basename(p);
      fs.readFile(path.join(web, file), (err, data) => {
        if (err) { res.writeHead(404); res.end(); return; }
        res.writeHead(200, { 'content-type': types[file.split('.').pop()] || 'application/octet-stream' });
        res.end(data);
      });
      return;
    }
    const up = http.request({ host: '127.0.0.1', port: backendPort, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', () => { res.writeHead(502); res.end(); });
    req.pipe(up);
  });
  server.on('upgrade', (req, socket, head) => {
    const up = net.connect(backendPort, '127.0.0.1', () => {
      const lines = [req.method + ' ' + req.url + ' HTTP/1.1'];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(req.rawHeaders[i] + ': ' + req.rawHeaders[i + 1]);
      up.write(lines.join('\r\n') + '\r\n\r\n');
      if (head && head.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
    up.on('close', () => socket.destroy());
  });
  await new Promise((r) => server.listen(listenPort, '127.0.0.1', r));
  return server;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const backend = Number(process.argv[2]);
  if (!backend) {
    console.error('usage: node pages-front.mjs <qzx-port> [listen-port]');
    process.exit(2);
  }
  const server = await pagesFront(backend, Number(process.argv[3] || 0));
  console.log('pages on http://127.0.0.1:' + server.address().port + '/ (add ?token=...), everything else to 127.0.0.1:' + backend);
}
