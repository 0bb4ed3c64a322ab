// Sends N events through Splunk's splunk-logging library in batches, as an application would.
// Usage: node send.js <url> <token> <count>; prints {"errors": [...]} when done. A count that is a
// multiple of maxBatchCount makes the last flush post an empty body, which HEC (Splunk too)
// answers with code 5 "No data".
const SplunkLogger = require("splunk-logging").Logger;

const [url, token, count] = process.argv.slice(2);
const logger = new SplunkLogger({ token, url, maxBatchCount: 10, maxRetries: 0 });
const errors = [];
logger.error = (err) => errors.push(String(err));
logger.eventFormatter = (message) => message; // the line as the event, as Splunk's own example does

for (let n = 0; n < Number(count); n++) {
  logger.send({
    message: `Nov  4 01:03:${String(n % 60).padStart(2, "0")} db01 sshd[99]: Failed password for root from 192.0.2.${n % 250 + 1} port ${40000 + n} ssh2`,
    metadata: { sourcetype: "linux_secure", index: "auth", host: "db01" },
  });
}
logger.flush(() => console.log(JSON.stringify({ errors })));
