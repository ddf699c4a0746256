// A WebAudio alarm beep (no audio file). Browsers only let a page play sound after a user gesture; the
// login click is one, and `unlockAudio()` is called from it.
let ctx: AudioContext | null = null;

export function unlockAudio(): void {
  try {
    ctx ??= new AudioContext();
    void ctx.resume();
  } catch { /* no audio device: the flashing still shows */ }
}

export function beep(): void {
  if (!ctx) unlockAudio();
  if (!ctx) return;
  const osc = ctx.createOscillator();
  const gain = ctx.createGain();
  osc.type = "square";
  osc.frequency.value = 880;
  gain.gain.setValueAtTime(0.15, ctx.currentTime);
  gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + 0.4);
  osc.connect(gain).connect(ctx.destination);
  osc.start();
  osc.stop(ctx.currentTime + 0.4);
  beeps.count += 1;
}

/** Beeps played so far (the wall test reads it: a headless browser has no speaker). */
export const beeps = { count: 0 };
(window as unknown as { gridwatchBeeps: typeof beeps }).gridwatchBeeps = beeps;
