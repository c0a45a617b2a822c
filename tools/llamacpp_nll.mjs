// The NLL of every scored token, computed by llama.cpp itself (through node-llama-cpp's prebuilt binaries), for
// tools/llamacpp_check.py. Usage: node tools/llamacpp_nll.mjs MODEL.gguf PLAN.json OUT.json
// PLAN.json: {"ids": [...], "ctx": 512, "windows": [[start, end, first_scored], ...]} (qtutor's window_plan);
// OUT.json gets {"nll": [...]} in nats, token after token, in the order qtutor's perplexity scores them.
import fs from "node:fs";
import {getLlama} from "node-llama-cpp";

const [modelPath, planPath, outPath] = process.argv.slice(2);
const plan = JSON.parse(fs.readFileSync(planPath, "utf8"));
const llama = await getLlama({gpu: false, logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: plan.ctx, batchSize: plan.ctx, threads: 2});
const sequence = context.getSequence();

function negativeLogLikelihood(logits, token) {  // -log softmax(logits)[token], with the max taken out first
    let max = -Infinity;
    for (const value of logits.values()) max = Math.max(max, value);
    let sum = 0;
    for (const value of logits.values()) sum += Math.exp(value - max);
    return max + Math.log(sum) - logits.get(token);
}

const nll = [];
for (const [start, end, firstScored] of plan.windows) {
    await sequence.clearHistory();  // every window starts from an empty cache, as in qtutor
    const items = [];
    for (let p = start; p < end - 1; p++)  // feeding token p predicts token p + 1
        items.push(p + 1 >= firstScored ? [plan.ids[p], {generateNext: {logits: true}}] : plan.ids[p]);
    const outputs = await sequence.controlledEvaluate(items);
    for (let i = 0; i < items.length; i++) {
        const p = start + i;
        if (p + 1 >= firstScored) nll.push(negativeLogLikelihood(outputs[i].next.logits, plan.ids[p + 1]));
    }
}
fs.writeFileSync(outPath, JSON.stringify({nll}));
console.log(`llama.cpp scored ${nll.length} tokens of ${modelPath}`);
await context.dispose();
await model.dispose();
