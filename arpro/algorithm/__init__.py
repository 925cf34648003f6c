"""The repair algorithm: the settings, the guided masked diffusion loop, best-of-K, the properties
P1–P4 and the service that runs the arms. Built on the plugin API and the runtime only; the
package is not named ``repair``, which would shadow the public function ``arpro.repair``."""
