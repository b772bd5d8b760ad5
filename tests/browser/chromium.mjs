// Headless Chromium for the browser tests: Debian's /usr/bin/chromium
// (installed with apt-get when missing and running as root) driven by
// playwright-core, with a fresh profile directory per launch. Nothing is
// downloaded by playwright itself.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const DESKTOP = { width: 1440, height: 900 };
export const PHONE = { width: 390, height: 844 };

export function ensureChromium() {
  if (fs.existsSync(CHROMIUM)) return;
  if (process.getuid && process.getuid() === 0) {
    execFileSync('apt-get', ['update'], { stdio: 'inherit' });
    execFileSync('apt-get', ['install', '-y', 'chromium', 'fonts-noto-cjk'], { stdio: 'inherit' });
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(CHROMIUM + ' is missing: apt-get install -y chromium fonts-noto-cjk (as root)');
}

/**
 * A browser context with its own profile; `close()` removes the profile.
 * Uncaught page errors and Content-Security-Policy violations are collected
 * in `pageErrors`.
 */
export async function launch() {
  ensureChromium();
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'qzx-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    viewport: DESKTOP,
    locale: 'zh-CN',
    timezoneId: 'Asia/Shanghai',
  });
  const pageErrors = [];
  return {
    ctx,
    pageErrors,
    async page(name, viewport) {
      const p = await ctx.newPage();
      p.on('pageerror', (e) => pageErrors.push(name + ': ' + e.message));
      // A blocked load means a page reached for something not served by qzx.
      p.on('console', (msg) => {
        if (msg.type() === 'error' && /Content Security Policy/i.test(msg.text())) pageErrors.push(name + ': ' + msg.text());
      });
      await p.setViewportSize(viewport || DESKTOP);
      return p;
    },
    async close() {
      await ctx.close().catch(() => {});
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}
