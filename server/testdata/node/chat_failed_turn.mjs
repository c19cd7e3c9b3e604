// Drives the web chat in Chromium with playwright-core: a question whose generation fails on the
// server, then a good one. The Go test (server/browser_test.go) checks that the second request
// did not carry the failed turn. Prints what the page showed as JSON.
import { launchChromium } from "./chromium.mjs";

const browser = await launchChromium();
const out = { pageErrors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => out.pageErrors.push(String(e)));
  await page.goto(process.env.BASE_URL + "/");
  await page.fill("#input", "the failed question");
  await page.keyboard.press("Enter");
  try {
    await page.waitForSelector(".msg.assistant .error", { timeout: 15000 });
  } catch (e) {
    console.error(await page.content());
    throw e;
  }
  out.error = await page.textContent(".msg.assistant .error");
  await page.fill("#input", "the second question");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelectorAll(".msg.assistant.done").length === 2, null, { timeout: 15000 });
  out.secondAnswer = (await page.$$eval(".msg.assistant .body", (els) => els.map((e) => e.textContent)))[1];
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
