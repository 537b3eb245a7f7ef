"""The training tasks: `ReportTask` (the interface Lightning trains and every command generates through), its two
implementations (`FusionTask`: an ECG encoder + fusion into a frozen LLM; `MllamaTask`: LLaMA 3.2 Vision with
LoRA), the datamodule, the `aligned` recipe's stage 1, and the one factory (`factory.make_task`)."""
