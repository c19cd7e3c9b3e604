// Drives the web chat in Debian's Chromium with playwright-core, as a person would: type a question,
// watch the answer stream, press Stop, then ask again. Prints what it saw as JSON for
// server/browser_test.go; page errors fail the run.
import { launchChromium } from "./chromium.mjs";

const base = process.env.BASE_URL;
const browser = await launchChromium();
const out = { pageErrors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => out.pageErrors.push(String(e)));
  await page.goto(base + "/");
  await page.fill("#input", "please talk for a long time");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => {
    const b = document.querySelector(".msg.assistant .body");
    return b && b.textContent.length > 40;
  }, null, { timeout: 15000 });
  out.stopEnabledWhileStreaming = await page.isEnabled("#stop");
  out.sendDisabledWhileStreaming = await page.isDisabled("#send");
  await page.click("#stop");
  await page.waitForSelector(".msg.assistant.done", { timeout: 5000 });
  out.stoppedStats = await page.textContent(".msg.assistant .stats");
  out.stoppedLength = (await page.textContent(".msg.assistant .body")).length;
  out.stopDisabledAfter = await page.isDisabled("#stop");
  await page.screenshot({ path: process.env.SCREENSHOT_STOPPED });

  await page.fill("#input", "short one");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelectorAll(".msg.assistant.done").length === 2, null, { timeout: 15000 });
  const answers = await page.$$eval(".msg.assistant .body", (els) => els.map((e) => e.innerHTML));
  out.secondAnswerHTML = answers[1];
  out.secondStats = (await page.$$eval(".msg.assistant .stats", (els) => els.map((e) => e.textContent)))[1];
  await page.screenshot({ path: process.env.SCREENSHOT_AFTER });
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
