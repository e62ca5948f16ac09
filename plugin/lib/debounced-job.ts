/**
 * Runs an async job soon after it is kicked, coalescing bursts into one run and never running two at
 * once (a kick during a run schedules one more run after it). Errors go to `onError`; the next kick retries.
 */
export class DebouncedJob {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(
    private readonly job: () => Promise<void>,
    private readonly onError: (err: unknown) => void,
    private readonly delayMs = 20,
  ) {}

  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.job()
        .catch(this.onError)
        .finally(() => {
          this.running = undefined;
          if (this.again) {
            this.again = false;
            this.kick();
          }
        });
    }, this.delayMs);
  }

  /** Runs the job now (after any run in progress) and resolves when it has finished. */
  async runNow(): Promise<void> {
    await this.running;
    await this.job();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
