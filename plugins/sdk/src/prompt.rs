//! Prompt plugins: turn a question into the model's prompt.

pub use crate::bindings::prompt::exports::research::plugins::prompt::Rendered;
pub use crate::types::Message;

/// A prompt template: built once per instance from its settings. Export it with
/// [`export_prompt!`](crate::export_prompt).
pub trait Prompt: Sized + Send + Sync + 'static {
    /// Reads and checks the settings ([`crate::config`]); an error keeps the plugin from
    /// loading.
    fn new() -> Result<Self, String>;

    /// Plain text (fed as is) or chat messages (rendered with the model's chat template).
    fn render(&self, question: String) -> Result<Rendered, String>;
}

/// Exports a type (any path) that implements [`Prompt`] as this component's prompt.
#[macro_export]
macro_rules! export_prompt {
    ($ty:ty) => {
        const _: () = {
            static PLUGIN: $crate::__private::Slot<$ty> = $crate::__private::Slot::new();
            struct Export;
            impl $crate::bindings::prompt::Guest for Export {
                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    PLUGIN.init(<$ty as $crate::prompt::Prompt>::new)
                }
            }
            impl $crate::bindings::prompt::exports::research::plugins::prompt::Guest for Export {
                fn render(
                    question: ::std::string::String,
                ) -> ::core::result::Result<$crate::prompt::Rendered, ::std::string::String> {
                    <$ty as $crate::prompt::Prompt>::render(PLUGIN.get()?, question)
                }
            }
            $crate::bindings::prompt::__export_prompt_world!(Export with_types_in $crate::bindings::prompt);
        };
    };
}
