// Drives the chat panel in headless Chromium (Debian's package, never a downloaded browser).
// Called by the Rust tests in tests/api/ui_browser.rs, which run the app and the fake Graph API
// and check what WhatsApp received.
//
// SCENARIO=reply (default): load the panel with a signed token, see the thread, send a reply
// and see it appear, see the customer's answer arrive without a reload; then load it with a
// forged token and see the refusal.
// SCENARIO=template: the 24-hour window is closed; pick a template, fill its parameters, send.
// SCENARIO=floating: PANEL_URL is the floating window; open the thread from the inbox, reply,
// go back to the inbox.
// SCENARIO=framed: PANEL_URL is the floating window, framed by a stand-in for Pipedrive that
// answers the SDK's messages: the page must initialise the SDK in time, take its tokens from
// it (FRESH_TOKEN) and keep the dock badge at the unseen count.
//
// Environment: CHROMIUM (executable), PANEL_URL, EXPECT_TEXT (in the thread), REPLY_TEXT (what
// the sent message shows); for `reply` also FORGED_URL and ANSWER_TEXT (what the customer
// writes once the reply reached WhatsApp); for `template` TEMPLATE_NAME and PARAMS (JSON list of
// values in placeholder order). SCREENSHOT: optional PNG path of the panel at the end.
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

async function open(page) {
  const loaded = await page.goto(env('PANEL_URL'));
  if (loaded.status() !== 200) throw new Error(`the page answered ${loaded.status()}`);
}

async function seeThread(page) {
  await page.locator('.msg.in .text', { hasText: env('EXPECT_TEXT') }).waitFor({ timeout: 10_000 });
}

async function send(page) {
  const text = env('REPLY_TEXT');
  await page.locator('textarea[name="text"]').fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
  const sent = page.locator('.msg.out', { hasText: text });
  await sent.waitFor({ timeout: 15_000 });
  await sent.locator('.ticks', { hasText: 'sent' }).waitFor({ timeout: 15_000 });
  if (await page.locator('textarea[name="text"]').inputValue()) throw new Error('the reply box was not cleared');
}

async function reply(page, watch) {
  await open(page);
  await seeThread(page);
  await send(page);
  await page.locator('.msg.in .text', { hasText: env('ANSWER_TEXT') }).waitFor({ timeout: 20_000 });
  await screenshot(page);

  watch.on = false; // the refusal page's own 401 is expected, not a problem
  const forged = await page.goto(env('FORGED_URL'));
  if (forged.status() !== 401) throw new Error(`a forged token got ${forged.status()}, not 401`);
  await page.getByText('could not be verified').waitFor({ timeout: 5_000 });
  if ((await page.content()).includes(env('EXPECT_TEXT'))) throw new Error('the refusal shows the thread');
}

async function template(page) {
  await open(page);
  await seeThread(page);
  if (await page.locator('textarea[name="text"]').isVisible()) throw new Error('free text offered with the window closed');
  const select = page.locator('select[name="template"]');
  await select.locator('option', { hasText: env('TEMPLATE_NAME') }).waitFor({ state: 'attached', timeout: 10_000 });
  await select.selectOption({ label: await select.locator('option', { hasText: env('TEMPLATE_NAME') }).innerText() });
  const inputs = page.locator('.params input');
  const values = JSON.parse(env('PARAMS'));
  await inputs.nth(values.length - 1).waitFor({ timeout: 5_000 });
  for (const [i, value] of values.entries()) await inputs.nth(i).fill(value);
  await page.getByRole('button', { name: 'Send' }).click();
  await page.locator('.msg.out', { hasText: env('REPLY_TEXT') }).waitFor({ timeout: 15_000 });
  await screenshot(page);
}

async function floating(page) {
  await open(page);
  const entry = page.locator('.entry.unseen', { hasText: env('EXPECT_TEXT') });
  await entry.waitFor({ timeout: 10_000 });
  await entry.locator('button').click();
  await seeThread(page);
  await send(page);
  await screenshot(page);
  await page.getByRole('button', { name: '← All conversations' }).click();
  await page.locator('.entry:not(.unseen)', { hasText: env('REPLY_TEXT') }).waitFor({ timeout: 15_000 });
}

// What Pipedrive's side of the SDK does, as far as the chat uses it: answer every command on
// the port that came with it, and log it.
const HOST_SCRIPT = `
  window.hostLog = [];
  window.addEventListener('message', (event) => {
    const payload = event.data && event.data.payload;
    if (!payload || payload.type !== 'command') return;
    window.hostLog.push({ command: payload.command, args: payload.args || null, at: performance.now() });
    const data = payload.command === 'get_signed_token' ? { token: window.freshToken } : null;
    if (event.ports[0]) event.ports[0].postMessage({ data });
  });`;

async function framed(page) {
  const host = new URL('/__pipedrive_host', env('PANEL_URL')).toString();
  await page.route(host, (route) =>
    route.fulfill({
      contentType: 'text/html',
      body: `<!doctype html><script>${HOST_SCRIPT}; window.freshToken = ${JSON.stringify(env('FRESH_TOKEN'))};</script>
             <iframe src="${env('PANEL_URL')}" width="400" height="600"></iframe>`,
    }),
  );
  await page.goto(host);
  const log = () => page.evaluate(() => window.hostLog);
  const until = async (what, check, seconds = 25) => {
    for (let i = 0; i < seconds * 10; i++) {
      if (check(await log())) return;
      await page.waitForTimeout(100);
    }
    throw new Error(`${what}; the host saw ${JSON.stringify(await log())}`);
  };
  const badges = (l) => l.filter((c) => c.command === 'set_notification').map((c) => c.args.number);
  await until('the SDK was not initialised', (l) => l.some((c) => c.command === 'initialize'), 10);
  const initialisedAt = (await log()).find((c) => c.command === 'initialize').at;
  if (initialisedAt > 10_000) throw new Error(`the SDK was initialised after ${initialisedAt} ms`);
  await until('no fresh token was asked for', (l) => l.some((c) => c.command === 'get_signed_token'));
  // Only the SDK's token sees the conversation: the badge and the list show it once the page
  // polls with that token.
  await until('the badge never counted the unseen conversation', (l) => badges(l).includes(1));
  const frame = page.frameLocator('iframe');
  await frame.locator('.entry.unseen button').click({ timeout: 25_000 });
  await frame.locator('.msg.in .text', { hasText: env('EXPECT_TEXT') }).waitFor({ timeout: 10_000 });
  await until('the badge was not cleared', (l) => badges(l).slice(badges(l).indexOf(1)).includes(0));
}

async function screenshot(page) {
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
}

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const problems = [];
const watch = { on: true };
try {
  const page = await browser.newPage({ viewport: { width: 360, height: 720 } });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (watch.on && message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  const scenario = process.env.SCENARIO || 'reply';
  if (scenario === 'template') await template(page);
  else if (scenario === 'floating') await floating(page);
  else if (scenario === 'framed') await framed(page);
  else await reply(page, watch);
} finally {
  await browser.close();
}
if (problems.length) throw new Error(problems.join('\n'));
console.log('browser test passed');
