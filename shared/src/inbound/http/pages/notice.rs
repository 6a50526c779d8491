//! What each page says, in both languages: a title, what happened and what the
//! person can do now. Plain sentences for someone who has never heard of OAuth.

use super::language::Language;
use crate::domain::{ConnectionId, Product};

/// Every page a person can be shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The account is connected under `connection_id`.
    Connected {
        /// The RD Station product connected.
        product: Product,
        /// The connection's id, as the operator named it.
        connection_id: ConnectionId,
    },
    /// The person did not allow access on RD's page.
    ConsentDenied,
    /// RD came back without a code.
    MissingCode,
    /// RD refused the code: expired or already used.
    CodeRejected,
    /// The connection id belongs to the other product.
    ProductMismatch,
    /// The connection exists and the link may not replace it.
    ConnectionExists,
    /// RD's token endpoint failed or refused the service's credentials.
    RdUnavailable,
    /// The deployment has no credentials for the product.
    NotConfigured,
    /// The connection could not be saved.
    NotSaved,
    /// The connect link is unknown, expired or used.
    InvalidSession,
    /// The connect link was opened in another browser.
    OtherBrowser,
    /// The callback's sign-in is unknown, expired, used or from another browser.
    InvalidState,
    /// The callback's address is malformed.
    MalformedCallback,
    /// Something of ours is unavailable.
    Unavailable,
    /// No page at this address.
    NotFound,
    /// A result page whose result is no longer shown.
    ResultGone,
}

/// A page's text in one language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wording {
    /// The page's title and heading.
    pub title: String,
    /// What happened.
    pub message: String,
    /// What the person can do now.
    pub next_step: String,
}

fn wording(title: &str, message: impl Into<String>, next_step: &str) -> Wording {
    Wording {
        title: title.to_owned(),
        message: message.into(),
        next_step: next_step.to_owned(),
    }
}

fn product_name(product: Product) -> &'static str {
    match product {
        Product::Marketing => "RD Station Marketing",
        Product::Crm => "RD Station CRM",
    }
}

impl Notice {
    /// The page's text in `language`.
    pub fn wording(&self, language: Language) -> Wording {
        match language {
            Language::Portuguese => self.portuguese(),
            Language::English => self.english(),
        }
    }

    fn english(&self) -> Wording {
        const AGAIN: &str = "Open the connection link again to start over.";
        const NEW_LINK: &str = "Ask whoever sent you the link for a new one.";
        const LATER: &str = "Please try again in a few minutes with a new link.";
        match self {
            Self::Connected {
                product,
                connection_id,
            } => wording(
                "Your RD Station account is connected",
                format!(
                    "The {} account is now connected as \u{201c}{}\u{201d}.",
                    product_name(*product),
                    // A person sees the name their company's systems use.
                    connection_id.name()
                ),
                "You can close this page. The connection keeps working without it.",
            ),
            Self::ConsentDenied => wording(
                "Connection not completed",
                "Access was not granted on RD Station, so nothing was connected.",
                "To connect, open the connection link again and allow access on RD Station's page.",
            ),
            Self::MissingCode => wording(
                "Connection not completed",
                "RD Station did not send an authorization code.",
                AGAIN,
            ),
            Self::CodeRejected => wording(
                "Connection not completed",
                "RD Station says the authorization expired or was already used.",
                AGAIN,
            ),
            Self::ProductMismatch => wording(
                "Connection not completed",
                "This connection already belongs to the other RD Station product.",
                NEW_LINK,
            ),
            Self::ConnectionExists => wording(
                "Already connected",
                "This account is already connected, and this link was not made to replace the connection.",
                "If you meant to reconnect it, ask whoever sent you the link for a reconnection link.",
            ),
            Self::RdUnavailable => wording(
                "Connection not completed",
                "RD Station could not complete the connection.",
                LATER,
            ),
            Self::NotConfigured => wording(
                "Connection not completed",
                "This service is not set up for this RD Station product yet.",
                "Please tell whoever sent you the link.",
            ),
            Self::NotSaved => wording(
                "Connection not completed",
                "The connection could not be saved.",
                LATER,
            ),
            Self::InvalidSession => wording(
                "This link no longer works",
                "This connection link is unknown, has expired or was already used.",
                NEW_LINK,
            ),
            Self::OtherBrowser => wording(
                "Open this link in your first browser",
                "This connection link was already opened in another browser.",
                "Finish there, or ask whoever sent you the link for a new one.",
            ),
            Self::InvalidState => wording(
                "Connection not completed",
                "We could not match this sign-in to a connection: it expired, was already used, or was started in another browser.",
                AGAIN,
            ),
            Self::MalformedCallback => wording(
                "Connection not completed",
                "The address of this page is incomplete.",
                AGAIN,
            ),
            Self::Unavailable => wording(
                "Service unavailable",
                "The service could not complete your request.",
                "Please try again in a few minutes.",
            ),
            Self::NotFound => wording(
                "Page not found",
                "There is nothing at this address.",
                "Check the link you followed, or ask whoever sent it for a new one.",
            ),
            Self::ResultGone => wording(
                "This result is no longer shown",
                "The result of a connection is shown only for a few minutes, in the browser that made it.",
                "If the connection was made, it keeps working; you can close this page.",
            ),
        }
    }

    fn portuguese(&self) -> Wording {
        const AGAIN: &str = "Abra o link de conexão novamente para recomeçar.";
        const NEW_LINK: &str = "Peça um novo link a quem enviou este.";
        const LATER: &str = "Tente novamente em alguns minutos, com um novo link.";
        const NOT_DONE: &str = "Conexão não concluída";
        match self {
            Self::Connected {
                product,
                connection_id,
            } => wording(
                "Sua conta do RD Station está conectada",
                format!(
                    "A conta do {} agora está conectada como \u{201c}{}\u{201d}.",
                    product_name(*product),
                    connection_id.name()
                ),
                "Você já pode fechar esta página. A conexão continua funcionando sem ela.",
            ),
            Self::ConsentDenied => wording(
                NOT_DONE,
                "O acesso não foi autorizado no RD Station, então nada foi conectado.",
                "Para conectar, abra o link de conexão novamente e autorize o acesso na página do RD Station.",
            ),
            Self::MissingCode => wording(
                NOT_DONE,
                "O RD Station não enviou um código de autorização.",
                AGAIN,
            ),
            Self::CodeRejected => wording(
                NOT_DONE,
                "O RD Station informou que a autorização expirou ou já foi usada.",
                AGAIN,
            ),
            Self::ProductMismatch => wording(
                NOT_DONE,
                "Esta conexão já pertence ao outro produto do RD Station.",
                NEW_LINK,
            ),
            Self::ConnectionExists => wording(
                "Conta já conectada",
                "Esta conta já está conectada, e este link não foi feito para substituir a conexão.",
                "Se a intenção era reconectar, peça um link de reconexão a quem enviou este.",
            ),
            Self::RdUnavailable => wording(
                NOT_DONE,
                "O RD Station não conseguiu concluir a conexão.",
                LATER,
            ),
            Self::NotConfigured => wording(
                NOT_DONE,
                "Este serviço ainda não está configurado para este produto do RD Station.",
                "Avise quem enviou o link.",
            ),
            Self::NotSaved => wording(NOT_DONE, "Não foi possível salvar a conexão.", LATER),
            Self::InvalidSession => wording(
                "Este link não funciona mais",
                "Este link de conexão é desconhecido, expirou ou já foi usado.",
                NEW_LINK,
            ),
            Self::OtherBrowser => wording(
                "Abra este link no primeiro navegador",
                "Este link de conexão já foi aberto em outro navegador.",
                "Conclua a conexão nele, ou peça um novo link a quem enviou este.",
            ),
            Self::InvalidState => wording(
                NOT_DONE,
                "Não reconhecemos este acesso: ele expirou, já foi usado ou foi iniciado em outro navegador.",
                AGAIN,
            ),
            Self::MalformedCallback => {
                wording(NOT_DONE, "O endereço desta página está incompleto.", AGAIN)
            }
            Self::Unavailable => wording(
                "Serviço indisponível",
                "O serviço não conseguiu concluir o seu pedido.",
                "Tente novamente em alguns minutos.",
            ),
            Self::NotFound => wording(
                "Página não encontrada",
                "Não há nada neste endereço.",
                "Confira o link que você seguiu, ou peça um novo a quem o enviou.",
            ),
            Self::ResultGone => wording(
                "Este resultado não é mais exibido",
                "O resultado de uma conexão é exibido só por alguns minutos, no navegador em que ela foi feita.",
                "Se a conexão foi feita, ela continua funcionando; você já pode fechar esta página.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_notice() -> Vec<Notice> {
        vec![
            Notice::Connected {
                product: Product::Crm,
                connection_id: ConnectionId::in_default_tenant("acme-1").expect("id"),
            },
            Notice::ConsentDenied,
            Notice::MissingCode,
            Notice::CodeRejected,
            Notice::ProductMismatch,
            Notice::ConnectionExists,
            Notice::RdUnavailable,
            Notice::NotConfigured,
            Notice::NotSaved,
            Notice::InvalidSession,
            Notice::OtherBrowser,
            Notice::InvalidState,
            Notice::MalformedCallback,
            Notice::Unavailable,
            Notice::NotFound,
            Notice::ResultGone,
        ]
    }

    #[test]
    fn every_page_reads_as_sentences_in_both_languages() {
        for notice in every_notice() {
            let pt = notice.wording(Language::Portuguese);
            let en = notice.wording(Language::English);
            assert_ne!(pt, en, "{notice:?} is not translated");
            for sentence in [&pt.message, &pt.next_step, &en.message, &en.next_step] {
                let first = sentence.chars().next().expect("text");
                assert!(first.is_uppercase(), "{notice:?}: {sentence}");
                assert!(sentence.ends_with('.'), "{notice:?}: {sentence}");
            }
        }
    }
}
