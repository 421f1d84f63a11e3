// An OpenAI-shaped server on Node's own http module: Node's framing (a chunk per write,
// Keep-Alive headers), and zlib's gzip on JSON bodies and, flushed per event, on streams.
const http = require('http');
const zlib = require('zlib');
const port = Number(process.argv[2] || 18600);
let next = 0;

function words(s) { return typeof s === 'string' ? s.split(/\s+/).filter(Boolean).length : 0; }

http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":{"message":"not found","type":"not_found"}}');
      return;
    }
    const b = JSON.parse(body);
    const prompt = (b.messages || []).reduce((n, m) => n + 3 + words(m.content), 0);
    const n = b.max_tokens || 4;
    const id = `chatcmpl-node${next++}`;
    const gzip = /gzip/.test(req.headers['accept-encoding'] || '');
    const usage = { prompt_tokens: prompt, completion_tokens: n, total_tokens: prompt + n };
    let out = res;
    const headers = { 'content-type': b.stream ? 'text/event-stream' : 'application/json' };
    if (gzip) {
      headers['content-encoding'] = 'gzip';
      out = zlib.createGzip({ flush: zlib.constants.Z_SYNC_FLUSH });
      out.pipe(res);
    }
    res.writeHead(200, headers);
    if (!b.stream) {
      let text = '';
      for (let i = 0; i < n; i++) text += `tok${i} `;
      out.end(JSON.stringify({ id, object: 'chat.completion', model: b.model, choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'length' }], usage }));
      return;
    }
    let i = 0;
    const tick = () => {
      if (i < n) {
        const chunk = { id, object: 'chat.completion.chunk', model: b.model, choices: [{ index: 0, delta: { content: `tok${i} ` }, finish_reason: i === n - 1 ? 'length' : null }] };
        out.write(`data: ${JSON.stringify(chunk)}\n\n`);
        i++;
        setTimeout(tick, 5);
        return;
      }
      if (b.stream_options && b.stream_options.include_usage) {
        out.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', model: b.model, choices: [], usage })}\n\n`);
      }
      out.end('data: [DONE]\n\n');
    };
    tick();
  });
}).listen(port, '127.0.0.1');
