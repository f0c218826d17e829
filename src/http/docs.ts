/**
 * The human-readable API page (/docs), rendered on the server from openapi.yaml into one
 * self-contained HTML document: inline CSS, no scripts, nothing fetched from elsewhere.
 */

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);
}

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;

/** Follows a local `$ref` (one or more hops); returns the object itself when it is not a reference. */
function deref(doc: Obj, v: unknown, seen = 0): Obj {
  if (!isObj(v)) return {};
  const ref = v.$ref;
  if (typeof ref !== 'string' || !ref.startsWith('#/') || seen > 16) return v;
  let cur: unknown = doc;
  for (const part of ref.slice(2).split('/')) cur = isObj(cur) ? cur[part.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined;
  return deref(doc, cur, seen + 1);
}

const refName = (v: unknown): string | undefined =>
  isObj(v) && typeof v.$ref === 'string' ? v.$ref.split('/').pop() : undefined;

/** A one-line type: `string`, `integer (1..2048)`, `User`, `array of HistoryItem`, `"a" | "b"`. */
function typeText(doc: Obj, schema: unknown): string {
  const name = refName(schema);
  if (name) return `<a href="#schema-${escapeHtml(name)}">${escapeHtml(name)}</a>`;
  if (!isObj(schema)) return 'any';
  if (Array.isArray(schema.enum)) return schema.enum.map((e) => escapeHtml(JSON.stringify(e))).join(' | ');
  if (Array.isArray(schema.oneOf) || Array.isArray(schema.anyOf)) {
    return ((schema.oneOf ?? schema.anyOf) as unknown[]).map((s) => typeText(doc, s)).join(' | ');
  }
  const t = Array.isArray(schema.type) ? schema.type.join(' | ') : typeof schema.type === 'string' ? schema.type : 'object';
  if (t.startsWith('array')) return `array of ${typeText(doc, schema.items)}`;
  const bounds: string[] = [];
  if (schema.minimum !== undefined || schema.maximum !== undefined) bounds.push(`${schema.minimum ?? ''}..${schema.maximum ?? ''}`);
  if (schema.exclusiveMinimum !== undefined) bounds.push(`> ${schema.exclusiveMinimum}`);
  if (schema.minLength !== undefined || schema.maxLength !== undefined) bounds.push(`length ${schema.minLength ?? 0}..${schema.maxLength ?? ''}`);
  if (schema.pattern !== undefined) bounds.push(`pattern <code>${escapeHtml(String(schema.pattern))}</code>`);
  if (schema.default !== undefined) bounds.push(`default ${escapeHtml(JSON.stringify(schema.default))}`);
  return escapeHtml(t) + (bounds.length ? ` <span class="b">(${bounds.join(', ')})</span>` : '');
}

function examplesOf(media: Obj): Array<[string, unknown]> {
  const out: Array<[string, unknown]> = [];
  if (media.example !== undefined) out.push(['example', media.example]);
  if (isObj(media.examples)) {
    for (const [k, ex] of Object.entries(media.examples)) if (isObj(ex)) out.push([String(ex.summary ?? k), ex.value]);
  }
  return out;
}

function renderExamples(media: Obj): string {
  return examplesOf(media)
    .map(([label, value]) => {
      const text = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
      return `<div class="ex"><div class="exl">${escapeHtml(label)}</div><pre>${escapeHtml(text)}</pre></div>`;
    })
    .join('');
}

function renderSchemaTable(doc: Obj, schema: Obj): string {
  const props = isObj(schema.properties) ? schema.properties : {};
  const required = new Set(Array.isArray(schema.required) ? schema.required.map(String) : []);
  const rows = Object.entries(props).map(([name, s]) => {
    const d = deref(doc, s);
    const desc = typeof d.description === 'string' ? d.description : typeof (s as Obj).description === 'string' ? String((s as Obj).description) : '';
    return `<tr><td><code>${escapeHtml(name)}</code>${required.has(name) ? ' <span class="req">required</span>' : ''}</td><td>${typeText(doc, s)}</td><td>${escapeHtml(desc)}</td></tr>`;
  });
  if (rows.length === 0) return `<p>${typeText(doc, schema)}</p>`;
  return `<table><tr><th>field</th><th>type</th><th>description</th></tr>${rows.join('')}</table>`;
}

function renderOperation(doc: Obj, path: string, method: string, op: Obj): string {
  const id = `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, '-')}`;
  const parts: string[] = [];
  parts.push(`<section class="op" id="${escapeHtml(id)}"><h3><span class="m ${method}">${method.toUpperCase()}</span> <code>${escapeHtml(path)}</code></h3>`);
  if (typeof op.summary === 'string') parts.push(`<p class="sum">${escapeHtml(op.summary)}</p>`);
  if (typeof op.description === 'string') parts.push(`<p>${escapeHtml(op.description)}</p>`);
  if (Array.isArray(op.security) && op.security.length > 0) parts.push('<p class="auth">Requires <code>Authorization: Bearer &lt;admin token&gt;</code>.</p>');
  const params = (Array.isArray(op.parameters) ? op.parameters : []).map((p) => deref(doc, p));
  if (params.length > 0) {
    parts.push('<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>description</th></tr>');
    for (const p of params) {
      parts.push(
        `<tr><td><code>${escapeHtml(String(p.name))}</code>${p.required ? ' <span class="req">required</span>' : ''}</td><td>${escapeHtml(String(p.in))}</td><td>${typeText(doc, p.schema)}</td><td>${escapeHtml(String(p.description ?? ''))}</td></tr>`,
      );
    }
    parts.push('</table>');
  }
  const body = deref(doc, op.requestBody);
  if (isObj(body.content)) {
    parts.push(`<h4>Request body${body.required ? '' : ' (optional)'}</h4>`);
    if (typeof body.description === 'string') parts.push(`<p>${escapeHtml(body.description)}</p>`);
    for (const [type, media] of Object.entries(body.content)) {
      if (!isObj(media)) continue;
      parts.push(`<p class="ct">${escapeHtml(type)}: ${typeText(doc, media.schema)}</p>`, renderExamples(media));
    }
  }
  if (isObj(op.responses)) {
    parts.push('<h4>Responses</h4>');
    for (const [status, r] of Object.entries(op.responses)) {
      const resp = deref(doc, r);
      parts.push(`<div class="resp"><span class="st s${escapeHtml(status[0])}">${escapeHtml(status)}</span> ${escapeHtml(String(resp.description ?? ''))}`);
      if (isObj(resp.content)) {
        for (const [type, media] of Object.entries(resp.content)) {
          if (!isObj(media)) continue;
          parts.push(`<p class="ct">${escapeHtml(type)}: ${typeText(doc, media.schema)}</p>`, renderExamples(media));
        }
      }
      parts.push('</div>');
    }
  }
  parts.push('</section>');
  return parts.join('\n');
}

const CSS = `
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#fafbfc}
main{max-width:980px;margin:0 auto;padding:24px}
h1{margin-bottom:0}h2{border-bottom:1px solid #d8dee6;padding-bottom:4px;margin-top:40px}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
pre{background:#f0f3f6;padding:10px;border-radius:6px;overflow-x:auto;margin:4px 0}
table{border-collapse:collapse;width:100%;margin:6px 0}td,th{border:1px solid #d8dee6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6}.op{background:#fff;border:1px solid #d8dee6;border-radius:8px;padding:4px 16px 12px;margin:16px 0}
.m{display:inline-block;min-width:60px;text-align:center;border-radius:4px;color:#fff;font-size:13px;padding:2px 6px}
.get{background:#2f7d4f}.post{background:#1f5fa8}.put{background:#8a5a00}.delete{background:#a62b2b}.patch{background:#6b3fa0}
.st{font-weight:600;padding:0 6px;border-radius:4px}.s2{background:#dcf2e3}.s4{background:#fde8c8}.s5{background:#f7d4d4}
.req{color:#a62b2b;font-size:12px}.b{color:#5b6675}.sum{font-weight:600}.exl{color:#5b6675;font-size:13px}.resp{margin:8px 0}
.toc td{border:none;padding:2px 8px}.auth{color:#8a5a00}
`;

/** Renders the whole OpenAPI document as one HTML page. */
export function renderDocsHtml(doc: Obj): string {
  const info = isObj(doc.info) ? doc.info : {};
  const title = String(info.title ?? 'API');
  const paths = isObj(doc.paths) ? doc.paths : {};
  const ops: Array<{ path: string; method: string; op: Obj; tag: string }> = [];
  for (const [path, item] of Object.entries(paths)) {
    if (!isObj(item)) continue;
    for (const m of METHODS) {
      const op = item[m];
      if (isObj(op)) ops.push({ path, method: m, op, tag: Array.isArray(op.tags) && op.tags.length ? String(op.tags[0]) : 'other' });
    }
  }
  const tags = [...new Set(ops.map((o) => o.tag))];
  const toc = ops
    .map(
      (o) =>
        `<tr><td><span class="m ${o.method}">${o.method.toUpperCase()}</span></td><td><a href="#op-${o.method}-${escapeHtml(o.path.replace(/[^A-Za-z0-9]+/g, '-'))}"><code>${escapeHtml(o.path)}</code></a></td><td>${escapeHtml(String(o.op.summary ?? ''))}</td></tr>`,
    )
    .join('');
  const sections = tags
    .map((tag) => `<h2>${escapeHtml(tag)}</h2>${ops.filter((o) => o.tag === tag).map((o) => renderOperation(doc, o.path, o.method, o.op)).join('\n')}`)
    .join('\n');
  const schemas = isObj(doc.components) && isObj(doc.components.schemas) ? doc.components.schemas : {};
  const schemaHtml = Object.entries(schemas)
    .map(([name, s]) => {
      const schema = deref(doc, s);
      const desc = typeof schema.description === 'string' ? `<p>${escapeHtml(schema.description)}</p>` : '';
      return `<section class="op" id="schema-${escapeHtml(name)}"><h3>${escapeHtml(name)}</h3>${desc}${renderSchemaTable(doc, schema)}</section>`;
    })
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)} API</title><style>${CSS}</style></head>
<body><main>
<h1>${escapeHtml(title)} <small>${escapeHtml(String(info.version ?? ''))}</small></h1>
<p>${escapeHtml(String(info.description ?? ''))}</p>
<p>Machine-readable: <a href="/openapi.yaml">/openapi.yaml</a> (OpenAPI ${escapeHtml(String(doc.openapi ?? ''))}).</p>
<h2>Endpoints</h2><table class="toc">${toc}</table>
${sections}
<h2>Schemas</h2>
${schemaHtml}
</main></body></html>
`;
}
