// Fastify under einhorn:  einhorn -n 2 -m manual -b 0.0.0.0:8080 -- node fastify.mjs
import Fastify from "fastify";
import { listen } from "einhorn/worker";

const app = Fastify();
app.get("/", async (req, reply) => reply.type("text/plain").send(`hello from fastify, worker ${process.pid}\n`));
await app.ready(); // routes and plugins loaded; then hand fastify's own http server to einhorn
await listen(app.server);
