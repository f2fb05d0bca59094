// An MCP server with no auth code at all, written as the TypeScript SDK's README and its
// simpleStreamableHttp example do it: McpServer + StreamableHTTPServerTransport on the SDK's
// express app, stateful (a transport per Mcp-Session-Id; POST, GET for the server's stream,
// DELETE to end the session), answers as server-sent events. `tessera gateway` protects it
// (e2e/run starts one in front of it).
//
// Tools: `search_docs` and `delete_file` echo their arguments; `long_task` sends `steps` progress
// notifications (1,000 by default) when the request has a progressToken, pausing `pause_ms` after
// every hundredth (so a client can tell a stream from a buffered answer), then returns;
// `secret_admin` is a tool the gateway's policy never names (so it is denied to every token).
//
//   node dist/servers/plain_ts.js --port 3002        # serves http://127.0.0.1:3002/mcp
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Request, Response } from 'express';
import * as z from 'zod/v4';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';

const text = (value: unknown) => ({ content: [{ type: 'text' as const, text: JSON.stringify(value) }] });

function getServer(): McpServer {
    const server = new McpServer({ name: 'tessera-e2e-plain-ts', version: '1.0.0' });
    server.registerTool(
        'search_docs',
        {
            description: 'Search the docs (echoes its arguments)',
            inputSchema: { query: z.string(), limit: z.number().optional(), filters: z.record(z.string(), z.unknown()).optional() }
        },
        async args => text({ tool: 'search_docs', ...args })
    );
    server.registerTool(
        'delete_file',
        { description: 'Delete a file (echoes its argument; deletes nothing)', inputSchema: { path: z.string() } },
        async ({ path }) => text({ tool: 'delete_file', path })
    );
    server.registerTool(
        'long_task',
        {
            description: 'Send `steps` progress notifications (a pause after every hundredth), then return',
            inputSchema: { steps: z.number().int().min(1).max(10_000).optional(), pause_ms: z.number().int().min(0).max(1000).optional() }
        },
        async ({ steps = 1000, pause_ms = 0 }, extra) => {
            const progressToken = extra._meta?.progressToken;
            for (let i = 1; i <= steps && progressToken !== undefined; i++) {
                await extra.sendNotification({
                    method: 'notifications/progress',
                    params: { progressToken, progress: i, total: steps, message: `step ${i}` }
                });
                if (pause_ms && i % 100 === 0) await sleep(pause_ms);
            }
            return text({ tool: 'long_task', steps });
        }
    );
    server.registerTool('secret_admin', { description: 'A tool the gateway policy never names' }, async () => text({ tool: 'secret_admin' }));
    return server;
}

const { values } = parseArgs({ options: { port: { type: 'string' } } });
const port = Number(values.port);
const app = createMcpExpressApp({ host: '127.0.0.1' });
const transports = new Map<string, StreamableHTTPServerTransport>();

app.post('/mcp', async (req: Request, res: Response) => {
    const sessionId = req.headers['mcp-session-id'] as string | undefined;
    let transport = sessionId ? transports.get(sessionId) : undefined;
    if (!transport) {
        if (sessionId || !isInitializeRequest(req.body)) {
            res.status(sessionId ? 404 : 400).json({
                jsonrpc: '2.0',
                error: { code: sessionId ? -32001 : -32000, message: sessionId ? 'Session not found' : 'Bad Request: No valid session ID provided' },
                id: null
            });
            return;
        }
        const created = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            onsessioninitialized: id => {
                transports.set(id, created);
            }
        });
        created.onclose = () => {
            if (created.sessionId) transports.delete(created.sessionId);
        };
        await getServer().connect(created);
        transport = created;
    }
    await transport.handleRequest(req, res, req.body);
});

// The server's own stream (GET) and the end of a session (DELETE).
const bySession = async (req: Request, res: Response) => {
    const transport = transports.get(req.headers['mcp-session-id'] as string);
    if (!transport) {
        res.status(400).send('Invalid or missing session ID');
        return;
    }
    await transport.handleRequest(req, res);
};
app.get('/mcp', bySession);
app.delete('/mcp', bySession);

app.listen(port, '127.0.0.1', () => console.log(`plain ts MCP server (no auth) on http://127.0.0.1:${port}/mcp`));
