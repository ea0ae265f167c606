// Express under einhorn:  einhorn -n 2 -m manual -b 0.0.0.0:8080 -- node express.mjs
import http from "node:http";
import express from "express";
import { listen } from "einhorn/worker";

const app = express();
app.get("/", (req, res) => res.type("text/plain").send(`hello from express, worker ${process.pid}\n`));
await listen(http.createServer(app)); // not app.listen(): einhorn owns the socket
